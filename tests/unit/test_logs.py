"""Logs: JSON lines with ``STREAMPROC_LOG_FORMAT=json``, text otherwise; one structured line per alert state
change; and no secret (webhook secret, SASL password, API token, bearer tokens, URL passwords) ever written."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streamproc import logs
from streamproc.clock import FakeClock
from streamproc.demand import Output
from streamproc.errors import ConfigError
from streamproc.runtime import Runtime
from streamproc.settings import ENV_VARS, Settings

SECRETS = {"STREAMPROC_WEBHOOK_SECRET": "hmac-K3y-0f-the-hooks", "STREAMPROC_API_TOKEN": "tok-0123456789abcdef-secret",
           "STREAMPROC_BROKER": "kafka:9093", "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "STREAMPROC_KAFKA_SASL_USERNAME": "svc",
           "STREAMPROC_KAFKA_SASL_PASSWORD": "pw-SASL-7f3a"}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing to a buffer; logging is put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    yield buf
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_log_format_is_validated_and_listed() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"STREAMPROC_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="STREAMPROC_LOG_FORMAT='yaml': use json"):
        Settings.from_env({"STREAMPROC_LOG_FORMAT": "yaml"})
    assert "STREAMPROC_LOG_FORMAT" in ENV_VARS


def test_json_format_writes_one_object_per_line_with_the_structured_fields(captured: io.StringIO) -> None:
    logs.configure(Settings(log_format="json", log_level="info"), stream=captured)
    log = logging.getLogger("streamproc.test")
    log.info("hello %s", "world", extra={"fields": {"product_id": "P1", "n": 3}})
    log.debug("not shown at info")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = [orjson.loads(line) for line in captured.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["msg"] == "hello world" and lines[0]["level"] == "info" and lines[0]["logger"] == "streamproc.test"
    assert lines[0]["product_id"] == "P1" and lines[0]["n"] == 3 and lines[0]["ts"].endswith("Z")
    assert lines[1]["level"] == "error" and "ValueError: boom" in lines[1]["exc"]


def test_text_format_is_one_readable_line_with_fields_in_brackets(captured: io.StringIO) -> None:
    logs.configure(Settings(), stream=captured)
    logging.getLogger("streamproc.test").warning("alert %s", "firing", extra={"fields": {"product_id": "P1"}})
    line = captured.getvalue()
    assert line.count("\n") == 1 and "WARNING streamproc.test: alert firing [product_id=P1]" in line
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_is_ever_written(captured: io.StringIO, fmt: str) -> None:
    env = dict(SECRETS, STREAMPROC_LOG_FORMAT=fmt)
    settings = Settings.from_env(env)
    logs.configure(settings, stream=captured)
    log = logging.getLogger("streamproc.test")
    log.warning("settings %r", settings)
    log.warning("posting with secret %s to http://user:url-Pa55word@hooks.example/x", settings.webhook_secret)
    log.warning("sasl %s", {"sasl_plain_password": settings.kafka_sasl_password, "security_protocol": "SASL_SSL"})
    log.warning("request headers: Authorization: Bearer %s", "some-other-bearer-token-value")
    log.warning("env", extra={"fields": {"api_token": settings.api_token, "password": "field-pw-123",
                                         "nested": {"url": "https://a:nested-pw@b/c"}}})
    try:
        raise RuntimeError(f"login failed password={settings.kafka_sasl_password}")
    except RuntimeError:
        log.exception("connect")
    out = captured.getvalue()
    for secret in (*(SECRETS[k] for k in ("STREAMPROC_WEBHOOK_SECRET", "STREAMPROC_API_TOKEN",
                                          "STREAMPROC_KAFKA_SASL_PASSWORD")),
                   "url-Pa55word", "some-other-bearer-token-value", "field-pw-123", "nested-pw"):
        assert secret not in out, f"{secret} leaked: {out}"
    assert out.count("[redacted]") >= 7
    assert "svc" in out  # not over-eager: a user name is not a secret


def test_worker_logging_config_redacts_and_uses_the_format() -> None:
    settings = Settings.from_env(dict(SECRETS, STREAMPROC_LOG_FORMAT="json"))
    cfg = logs.dict_config(settings.log_format, settings.log_level, logs.secrets_of(settings))
    assert cfg["formatters"]["default"]["()"] is logs.JsonFormatter
    assert set(cfg["filters"]["redact"]["secrets"]) >= {"hmac-K3y-0f-the-hooks", "pw-SASL-7f3a",
                                                         "tok-0123456789abcdef-secret"}
    assert cfg["root"]["level"] == "WARNING"


async def test_each_alert_state_change_is_one_structured_line(captured: io.StringIO) -> None:
    from streamproc import alerts as alerts_mod

    logs.configure(Settings(log_format="json"), stream=captured)

    async def send(*_: Any) -> None:
        return None

    rt = Runtime(Settings(), send, clock=FakeClock(1_700_000_000_000))
    alert = alerts_mod.new_alert(alertname="demand_surge", signal="orders", product_id="P1", category="shoes",
                                 severity="critical", window_start_ms=0, window_end_ms=60_000, observed=40,
                                 expected=4, score=0.99)
    resolved = alerts_mod.resolve_alert(alert, window_start_ms=60_000, window_end_ms=120_000, observed=4,
                                        expected=4, score=0.1)
    await rt.publish([Output("alert", alert["dedup_key"], alert), Output("alert", alert["dedup_key"], resolved)])
    lines = [orjson.loads(line) for line in captured.getvalue().splitlines()]
    assert [(x["event"], x["status"], x["dedup_key"]) for x in lines] == [
        ("alert", "firing", "demand_surge:orders:P1"), ("alert", "resolved", "demand_surge:orders:P1")]
    assert lines[0]["product_id"] == "P1" and lines[0]["severity"] == "critical" and lines[0]["observed"] == 40
    assert lines[0]["alert_id"] == alert["alert_id"] and lines[0]["level"] == "warning"
