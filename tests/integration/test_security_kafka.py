"""Kafka SASL/SCRAM against a real Apache Kafka (KRaft, from Maven Central), and secrets kept out of logs.

* A worker configured only through ``STREAMPROC_KAFKA_*`` creates its topics, joins its group, restores
  its table and processes clicks end to end over the SCRAM-SHA-256 listener; its log at debug level holds
  none of the secrets it was given (SASL password, webhook HMAC secret, API token).
* With a wrong password it stops at once with exit 2 and the authentication error, never ready.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from streamproc import loadgen
from streamproc.kafka_auth import client_kwargs
from streamproc.settings import Settings
from tests.kafka.apache_kafka import KafkaCluster
from tests.kafka.conftest_plugin import SCRAM_PASSWORD, SCRAM_USER

from .support import Worker, isolated_env, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
API_TOKEN = "api-tok-3e9d1c0b7a5f4e21"
WEBHOOK_SECRET = "whsec-8c1f0e2d9b7a"


def _sasl_env(kafka: KafkaCluster, tmp: Path, password: str, **extra: str) -> dict[str, str]:
    assert kafka.sasl_bootstrap
    return isolated_env(kafka.sasl_bootstrap, tmp, {
        "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMPROC_KAFKA_SASL_USERNAME": SCRAM_USER,
        "STREAMPROC_KAFKA_SASL_PASSWORD": password,
        "STREAMPROC_PARTITIONS": "2",
        **extra,
    })


def _launch(env: dict[str, str], tmp: Path) -> Worker:
    settings = Settings.from_env(env)
    log = tmp / f"worker-{settings.app_id}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streamproc", "worker"], env=env, stdout=fh, stderr=fh,
                                start_new_session=True)
    return Worker(proc, settings.web_port, settings, env, log)


def _ready(w: Worker, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if w.proc.poll() is not None:
            raise AssertionError(f"worker exited with {w.proc.returncode}: {w.log.read_text()[-3000:]}")
        try:
            if w.get("/readyz").get("ready"):
                return True
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.3)
    return False


async def _post(url: str, body: bytes, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers,
                                                    timeout=aiohttp.ClientTimeout(total=15)) as r:
        return r.status


def test_worker_over_sasl_scram_processes_clicks_and_logs_no_secret(
        apache_kafka: KafkaCluster, tmp_path: Path) -> None:
    env = _sasl_env(apache_kafka, tmp_path, SCRAM_PASSWORD, STREAMPROC_LOG_LEVEL="debug",
                    STREAMPROC_API_TOKEN=API_TOKEN, STREAMPROC_WEBHOOK_SECRET=WEBHOOK_SECRET,
                    STREAMPROC_WEBHOOK_URLS="http://127.0.0.1:9/hook")  # webhook delivery's clients use SASL too
    settings = Settings.from_env(env)
    worker = _launch(env, tmp_path)
    try:
        assert _ready(worker, 120), f"not ready in 120 s: {worker.log.read_text()[-3000:]}"
        now = int(time.time() * 1000)
        start = now - now % MIN - 10 * MIN
        clicks = [("clicks", f"P{i % 5}".encode(),
                   orjson.dumps({"event_id": f"e{i}", "ts": start + i * 1000, "user_id": f"u{i % 7}",
                                 "product_id": f"P{i % 5}"}), start + i * 1000)
                  for i in range(600)]  # ten minutes of event time: the first buckets close
        report = asyncio.run(loadgen.produce(
            settings.broker or "", clicks, speed=None, progress=False, topic_names=dict(settings.topics),
            client_kwargs=client_kwargs(settings)))  # loadgen's producer over SASL too
        assert report.errors == 0 and report.events == 600

        features = wait_for(lambda: (f := worker.get("/features/P1"))["status"] == "PRESENT" and f, 60)
        assert features["features"]["clicks_5m"] > 0

        silence = orjson.dumps({"matchers": [{"name": "product_id", "value": "P1"}],
                                "endsAt": "2099-01-01T00:00:00Z", "comment": "test", "createdBy": "ops"})
        assert asyncio.run(_post(worker.url + "/silences", silence, None)) == 401
        assert asyncio.run(_post(worker.url + "/silences", silence, API_TOKEN)) == 200  # written over SASL
    finally:
        worker.stop()
    log = worker.log.read_text(errors="replace")
    assert " DEBUG " in log or "[D]" in log or "DEBUG" in log  # debug logging really was on
    for secret in (SCRAM_PASSWORD, API_TOKEN, WEBHOOK_SECRET):
        assert secret not in log, f"secret {secret[:4]}… found in the worker log"


def test_worker_with_a_wrong_password_stops_with_the_auth_error(
        apache_kafka: KafkaCluster, tmp_path: Path) -> None:
    wrong = "not-the-password-6d2e"
    env = _sasl_env(apache_kafka, tmp_path, wrong)
    worker = _launch(env, tmp_path)
    try:
        code = worker.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.stop()
        pytest.fail(f"worker with a wrong password still running after 60 s: {worker.log.read_text()[-2000:]}")
    log = worker.log.read_text(errors="replace")
    assert code == 2, log[-2000:]
    assert "SaslAuthenticationFailed" in log and "STREAMPROC_KAFKA_SASL_PASSWORD" in log
    assert wrong not in log
