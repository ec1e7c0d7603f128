"""Security settings: Kafka SASL/TLS pass through from the environment to every client, bad combinations
stop start-up with exit 2 and a one-line fix, secrets never show in ``repr``; the HTTP API's writes need
the bearer token when one is set, and oversize bodies get 413."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest

from streamproc.cli import main
from streamproc.clock import FakeClock
from streamproc.errors import ConfigError
from streamproc.kafka_auth import broker_credentials, client_kwargs, ssl_context
from streamproc.runtime import Runtime
from streamproc.settings import ENV_VARS, SECRET_ENV_VARS, Settings
from streamproc.silences import SilenceService, SilenceStore
from streamproc.web import make_web_app

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
TOKEN = "tok-0123456789abcdef-secret"
SASL = {"STREAMPROC_BROKER": "kafka:9093", "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "STREAMPROC_KAFKA_SASL_USERNAME": "svc",
        "STREAMPROC_KAFKA_SASL_PASSWORD": "pw-SASL-7f3a"}


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed CA and a client certificate/key signed by it (PEM), made with the openssl CLI."""
    d = tmp_path_factory.mktemp("pem")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    try:
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=test-ca")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
            "-subj", "/CN=streamproc")
        run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.crt", "-days", "2")
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl CLI unavailable: {exc}")
    return {"ca": str(d / "ca.crt"), "cert": str(d / "client.crt"), "key": str(d / "client.key")}


# -- settings -----------------------------------------------------------------------------------------


def test_default_is_plaintext_and_adds_nothing_to_the_clients() -> None:
    s = Settings.from_env({})
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert client_kwargs(s) == {}
    assert broker_credentials(s) is None


def test_every_security_variable_is_known() -> None:
    for var in ("STREAMPROC_KAFKA_SECURITY_PROTOCOL", "STREAMPROC_KAFKA_SASL_MECHANISM",
                "STREAMPROC_KAFKA_SASL_USERNAME", "STREAMPROC_KAFKA_SASL_PASSWORD", "STREAMPROC_KAFKA_SSL_CAFILE",
                "STREAMPROC_KAFKA_SSL_CERTFILE", "STREAMPROC_KAFKA_SSL_KEYFILE", "STREAMPROC_KAFKA_SSL_KEY_PASSWORD",
                "STREAMPROC_API_TOKEN", *SECRET_ENV_VARS):
        assert var in ENV_VARS


def test_sasl_scram_reaches_the_aiokafka_clients_and_faust() -> None:
    s = Settings.from_env(SASL)
    assert client_kwargs(s) == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                "sasl_plain_username": "svc", "sasl_plain_password": "pw-SASL-7f3a"}
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value, creds.protocol.value) == \
        ("svc", "pw-SASL-7f3a", "SCRAM-SHA-512", "SASL_PLAINTEXT")
    assert "pw-SASL" not in repr(creds)


def test_protocol_and_mechanism_are_case_insensitive_and_mechanism_defaults_to_plain() -> None:
    env = {k: v for k, v in SASL.items() if k != "STREAMPROC_KAFKA_SASL_MECHANISM"}
    s = Settings.from_env({**env, "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext"})
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    s = Settings.from_env({**SASL, "STREAMPROC_KAFKA_SASL_MECHANISM": "scram-sha-256"})
    assert s.kafka_sasl_mechanism == "SCRAM-SHA-256"


def test_tls_with_client_certificate(pem: dict[str, str]) -> None:
    env = {"STREAMPROC_BROKER": "kafka:9093", "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SSL",
           "STREAMPROC_KAFKA_SSL_CAFILE": pem["ca"], "STREAMPROC_KAFKA_SSL_CERTFILE": pem["cert"],
           "STREAMPROC_KAFKA_SSL_KEYFILE": pem["key"]}
    s = Settings.from_env(env)
    kw = client_kwargs(s)
    assert kw["security_protocol"] == "SSL" and isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].check_hostname and kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"


def test_sasl_over_tls(pem: dict[str, str]) -> None:
    s = Settings.from_env({**SASL, "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                           "STREAMPROC_KAFKA_SSL_CAFILE": pem["ca"]})
    kw = client_kwargs(s)
    assert kw["security_protocol"] == "SASL_SSL" and isinstance(kw["ssl_context"], ssl.SSLContext)
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_SSL"


def test_a_file_that_is_not_pem_fails_with_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    s = Settings.from_env({"STREAMPROC_BROKER": "kafka:9093", "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SSL",
                           "STREAMPROC_KAFKA_SSL_CAFILE": str(bad)})
    with pytest.raises(ConfigError, match="STREAMPROC_KAFKA_SSL"):
        ssl_context(s)


@pytest.mark.parametrize(("env", "names"), [
    ({"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "TLS", "STREAMPROC_BROKER": "k:1"}, "STREAMPROC_KAFKA_SECURITY_PROTOCOL"),
    ({"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "STREAMPROC_BROKER"),  # embedded broker: plaintext only
    ({**SASL, "STREAMPROC_KAFKA_SASL_MECHANISM": "GSSAPI"}, "STREAMPROC_KAFKA_SASL_MECHANISM"),
    ({**SASL, "STREAMPROC_KAFKA_SASL_PASSWORD": ""}, "STREAMPROC_KAFKA_SASL_PASSWORD"),
    ({k: v for k, v in SASL.items() if k != "STREAMPROC_KAFKA_SASL_USERNAME"}, "STREAMPROC_KAFKA_SASL_USERNAME"),
    ({**SASL, "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "SASL_SSL"),  # credentials that would be ignored
    ({**SASL, "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SSL"}, "SASL_SSL"),
    ({**SASL, "STREAMPROC_KAFKA_SSL_CAFILE": "/etc/ca.crt"}, "SSL or SASL_SSL"),  # TLS file without TLS
    ({**SASL, "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "STREAMPROC_KAFKA_SSL_CAFILE": "/nonexistent/ca.crt"},
     "no such file"),
    ({"STREAMPROC_API_TOKEN": "short"}, "STREAMPROC_API_TOKEN"),
    ({"STREAMPROC_API_TOKEN": "has a space in the middle"}, "STREAMPROC_API_TOKEN"),
])
def test_bad_combination_fails_at_start_up_with_a_fix(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value)


def test_key_without_certificate_fails(pem: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="STREAMPROC_KAFKA_SSL_CERTFILE"):
        Settings.from_env({"STREAMPROC_BROKER": "k:1", "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SSL",
                           "STREAMPROC_KAFKA_SSL_KEYFILE": pem["key"]})


def test_cli_exits_2_for_a_bad_security_combination(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STREAMPROC_KAFKA_SASL_USERNAME", "svc")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "STREAMPROC_KAFKA_SECURITY_PROTOCOL" in err


def test_repr_of_settings_shows_no_secret() -> None:
    secrets = {"STREAMPROC_WEBHOOK_SECRET": "whsec-91c2d", "STREAMPROC_KAFKA_SASL_PASSWORD": "pw-SASL-7f3a",
               "STREAMPROC_API_TOKEN": TOKEN, "STREAMPROC_KAFKA_SSL_KEY_PASSWORD": "keypw-55e1"}
    assert set(secrets) == set(SECRET_ENV_VARS)
    env = {**SASL, **secrets, "STREAMPROC_KAFKA_SSL_KEY_PASSWORD": ""}  # no key file here: key password unset
    s = Settings.from_env(env)
    text = repr(s) + str(s)
    for value in (*secrets.values(), SASL["STREAMPROC_KAFKA_SASL_PASSWORD"]):
        assert value not in text
    assert "svc" in text  # the user name is not a secret and helps debugging


# -- HTTP: bearer token on writes, body limit ---------------------------------------------------------


SILENCE = orjson.dumps({"matchers": [{"name": "product_id", "value": "P1"}], "endsAt": "2023-11-15T00:00:00Z",
                        "comment": "sale", "createdBy": "ops"})


async def _client(aiohttp_client: Any, token: str | None) -> Any:
    async def send(*_a: Any) -> None:
        return None

    settings = Settings(api_token=token)
    runtime = Runtime(settings, send, clock=FakeClock(T0))
    return await aiohttp_client(make_web_app(runtime, settings, SilenceService(SilenceStore())))


async def test_writes_need_the_bearer_token_and_reads_stay_open(aiohttp_client: Any) -> None:
    client = await _client(aiohttp_client, TOKEN)
    r = await client.post("/silences", data=SILENCE)
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in await r.text()
    r = await client.post("/silences", data=SILENCE, headers={"Authorization": "Bearer wrong-token-0000000000"})
    assert r.status == 401
    r = await client.post("/silences", data=SILENCE, headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status == 401
    r = await client.post("/silences", data=SILENCE, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200
    sid = (await r.json())["silenceID"]

    for path in ("/silences", f"/silences/{sid}", "/healthz", "/metrics", "/features?ids=P1", "/alerts"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/features/P1")).status == 404  # open to read; P1 simply has no features

    assert (await client.delete(f"/silences/{sid}")).status == 401
    r = await client.delete(f"/silences/{sid}", headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status == 200 and (await r.json())["status"]["state"] == "expired"


async def test_without_a_token_writes_are_open(aiohttp_client: Any) -> None:
    client = await _client(aiohttp_client, None)
    assert (await client.post("/silences", data=SILENCE)).status == 200


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_oversize_body_gets_413(aiohttp_client: Any, token: str | None) -> None:
    client = await _client(aiohttp_client, token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await client.post("/silences", data=b"x" * ((1 << 20) + 1), headers=headers)
    assert r.status == 413
