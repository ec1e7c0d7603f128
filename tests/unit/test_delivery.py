"""Webhook delivery, pure parts: receivers, payload formats, signatures, retry decisions, the retry loop."""

from __future__ import annotations

import email.utils
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.alerts import new_alert
from streamproc.delivery import (
    DeliveryConfig,
    Receiver,
    Result,
    alertmanager_payload,
    backoff_s,
    classify,
    dead_letter_record,
    deliver,
    encode_body,
    parse_receivers,
    request_headers,
    retry_after_s,
    skip_reason,
)
from streamproc.errors import ConfigError
from streamproc.settings import ENV_VARS, Settings
from streamproc.webhooks import verify


def alert(pid: str = "P1", category: str | None = "shoes", **kw: Any) -> dict[str, Any]:
    return new_alert(alertname="demand_surge", signal="orders", product_id=pid, category=category,
                     severity="warning", window_start_ms=1_700_000_000_000, window_end_ms=1_700_000_060_000,
                     observed=30, expected=2.0, score=0.9, **kw)


# -- configuration ------------------------------------------------------------------------------


def test_receivers_pick_their_format_from_a_prefix() -> None:
    got = parse_receivers(["http://a/hook", "am+http://b/hook", "alertmanager+https://c/x", "native+http://d/"])
    assert got == (Receiver("http://a/hook", "native"), Receiver("http://b/hook", "alertmanager"),
                   Receiver("https://c/x", "alertmanager"), Receiver("http://d/", "native"))
    assert got[0].group_suffix != got[1].group_suffix
    assert Receiver("http://a/hook").group_suffix == got[0].group_suffix  # same URL, same progress


def test_settings_read_the_delivery_variables() -> None:
    s = Settings.from_env({
        "STREAMPROC_WEBHOOK_URLS": "http://a/hook,am+http://b/hook",
        "STREAMPROC_WEBHOOK_GROUP_WAIT_MS": "250", "STREAMPROC_WEBHOOK_MAX_ALERTS": "7",
        "STREAMPROC_WEBHOOK_DEADLINE_MS": "60000", "STREAMPROC_WEBHOOK_BACKOFF_MS": "10",
        "STREAMPROC_WEBHOOK_MAX_BACKOFF_MS": "1000", "STREAMPROC_WEBHOOK_SEND_INHIBITED": "1",
        "STREAMPROC_WEBHOOK_EXTERNAL_URL": "https://shop.example/sp",
        "STREAMPROC_ALERT_REPEAT_INTERVAL_MS": "3600000",
    })
    cfg = DeliveryConfig.from_settings(s)
    assert (cfg.group_wait_s, cfg.max_alerts, cfg.deadline_s, cfg.backoff_s, cfg.max_backoff_s) == \
        (0.25, 7, 60.0, 0.01, 1.0)
    assert cfg.send_inhibited and cfg.external_url == "https://shop.example/sp"
    assert s.alert_repeat_interval_ms == 3_600_000
    for var in ("STREAMPROC_WEBHOOK_GROUP_WAIT_MS", "STREAMPROC_WEBHOOK_DEADLINE_MS",
                "STREAMPROC_ALERT_REPEAT_INTERVAL_MS", "STREAMPROC_ALERT_PENDING_MS",
                "STREAMPROC_WEBHOOK_EXTERNAL_URL"):
        assert var in ENV_VARS


def test_defaults_are_the_documented_ones() -> None:
    cfg = DeliveryConfig.from_settings(Settings.from_env({}))
    assert (cfg.group_wait_s, cfg.deadline_s, cfg.timeout_s, cfg.send_inhibited) == (5.0, 3600.0, 10.0, False)
    assert Settings.from_env({}).alert_repeat_interval_ms == 4 * 3_600_000


def test_pending_and_keep_firing_periods_become_detector_buckets() -> None:
    s = Settings.from_env({"STREAMPROC_BUCKET_MS": "60000", "STREAMPROC_ALERT_PENDING_MS": "90000",
                           "STREAMPROC_ALERT_KEEP_FIRING_MS": "300000"})
    cfg = s.detector_config()
    assert (cfg.pending_steps, cfg.keep_firing_steps) == (2, 5)
    assert Settings.from_env({"STREAMPROC_ALERT_PENDING_MS": "0"}).detector_config().pending_steps == 1


@pytest.mark.parametrize("env", [
    {"STREAMPROC_WEBHOOK_URLS": "am+ftp://x/y"},
    {"STREAMPROC_WEBHOOK_URLS": "am+"},
    {"STREAMPROC_WEBHOOK_MAX_ALERTS": "0"},
    {"STREAMPROC_WEBHOOK_DEADLINE_MS": "soon"},
    {"STREAMPROC_ALERT_PENDING_MS": "60000", "STREAMPROC_DETECT_PENDING_STEPS": "2"},
])
def test_bad_delivery_settings_say_what_to_fix(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="STREAMPROC_"):
        Settings.from_env(env)


# -- what is sent -------------------------------------------------------------------------------


def test_native_body_is_the_contract_shape() -> None:
    a = alert()
    body = orjson.loads(encode_body(Receiver("http://x"), [a], DeliveryConfig()))
    assert body == {"version": "1", "alerts": [a]}


def test_alertmanager_body_has_the_v4_fields() -> None:
    a, b = alert("P1"), alert("P2")
    resolved = {**b, "status": "resolved", "ends_at": "2023-11-14T22:15:00.000Z"}
    body = alertmanager_payload("http://b/hook", [a, resolved], "http://sp:6066")
    assert body["version"] == "4" and body["receiver"] == "http://b/hook"
    assert set(body) >= {"receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations",
                         "externalURL", "groupKey", "truncatedAlerts"}
    assert body["status"] == "firing" and body["truncatedAlerts"] == 0
    assert body["commonLabels"] == {"alertname": "demand_surge", "category": "shoes", "signal": "orders",
                                    "severity": "warning"}
    first, second = body["alerts"]
    assert set(first) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert first["labels"]["product_id"] == "P1" and first["fingerprint"] == a["fingerprint"]
    assert first["endsAt"] == "0001-01-01T00:00:00Z" and second["endsAt"] == "2023-11-14T22:15:00.000Z"
    assert first["generatorURL"] == "http://sp:6066/features/P1"
    assert first["annotations"]["alert_id"] == a["alert_id"]
    assert alertmanager_payload("r", [resolved], "x")["status"] == "resolved"


def test_labels_without_a_value_are_left_out_of_alertmanager_labels() -> None:
    body = alertmanager_payload("r", [alert(category=None)], "http://x")
    assert "category" not in body["alerts"][0]["labels"]


def test_signature_verifies_with_the_secret_and_fails_with_another() -> None:
    body = encode_body(Receiver("http://x"), [alert()], DeliveryConfig())
    h = request_headers(body, "s3cret", "d-1")
    assert h["Content-Type"] == "application/json" and h["X-Streamproc-Delivery"] == "d-1"
    assert verify(body, "s3cret", h["X-Streamproc-Signature"])
    assert not verify(body, "other", h["X-Streamproc-Signature"])
    assert not verify(body + b" ", "s3cret", h["X-Streamproc-Signature"])
    assert "X-Streamproc-Signature" not in request_headers(body, None, "d-2")


def test_silenced_and_inhibited_alerts_are_not_sent() -> None:
    cfg = DeliveryConfig()
    assert skip_reason(alert(), cfg) is None
    assert skip_reason({**alert(), "silenced": True, "silenced_by": ["s"]}, cfg) == "silenced"
    inhibited = {**alert(), "inhibited_by": "demand_surge:orders:category:shoes"}
    assert skip_reason(inhibited, cfg) == "inhibited"
    assert skip_reason(inhibited, DeliveryConfig(send_inhibited=True)) is None


# -- retry decisions ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "verdict"), [
    (200, "delivered"), (204, "delivered"), (429, "retry"), (500, "retry"), (503, "retry"),
    (400, "rejected"), (401, "rejected"), (404, "rejected"), (410, "rejected"), (301, "redirected"), (307, "redirected"),
])
def test_only_429_and_5xx_are_retried(status: int, verdict: str) -> None:
    assert classify(status) == verdict


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_s("2", 0.0) == 2.0
    assert retry_after_s(" 0.5 ", 0.0) == 0.5
    assert retry_after_s(None, 0.0) is None and retry_after_s("soon", 0.0) is None
    now = 1_700_000_000.0
    assert retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0


@given(st.integers(1, 60), st.floats(0.001, 10), st.floats(1, 600))
def test_backoff_doubles_is_capped_and_jittered(attempt: int, base: float, cap: float) -> None:
    lo = backoff_s(attempt, base, cap, lambda a, b: a)
    hi = backoff_s(attempt, base, cap, lambda a, b: b)
    assert 0 < lo <= hi <= cap
    assert lo == pytest.approx(hi / 2)
    if base * 2 ** (attempt - 1) <= cap:
        assert hi == pytest.approx(base * 2 ** (attempt - 1))


class FakeReceiver:
    """Answers from a script; time is a number the test owns."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls: list[float] = []
        self.now = 1000.0
        self.bodies: list[bytes] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str]:
        self.calls.append(self.now)
        self.bodies.append(body)
        item = self.script.pop(0) if self.script else 200
        if isinstance(item, Exception):
            raise item
        status, hdrs = item if isinstance(item, tuple) else (item, {})
        return status, hdrs, f"answer {status}" + "x" * 2000

    async def sleep(self, s: float) -> None:
        self.now += s


async def run(rcv: FakeReceiver, deadline_s: float = 3600, cfg: DeliveryConfig | None = None) -> Result:
    cfg = cfg or DeliveryConfig(backoff_s=0.5, max_backoff_s=60)
    return await deliver("http://x", b"{}", {}, post=rcv.post, give_up_at_s=rcv.now + deadline_s, cfg=cfg,
                         now_s=lambda: rcv.now, sleep=rcv.sleep, rand=lambda a, b: b)


async def test_server_errors_are_retried_until_accepted() -> None:
    rcv = FakeReceiver([500, 502, 503, OSError("connection refused"), TimeoutError(), 200])
    res = await run(rcv)
    assert res.outcome == "delivered" and res.attempts == 6
    gaps = [b - a for a, b in zip(rcv.calls, rcv.calls[1:], strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 8.0]  # exponential backoff (jitter pinned to its top)
    assert len(set(rcv.bodies)) == 1  # the same body each time


async def test_a_500_window_of_30s_then_200_delivers() -> None:
    rcv = FakeReceiver([])
    start = rcv.now

    async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str]:
        rcv.calls.append(rcv.now)
        return (500 if rcv.now - start < 30 else 200), {}, ""

    res = await deliver("http://x", b"{}", {}, post=post, give_up_at_s=start + 3600, cfg=DeliveryConfig(),
                        now_s=lambda: rcv.now, sleep=rcv.sleep, rand=lambda a, b: a)
    assert res.outcome == "delivered" and rcv.now - start >= 30


async def test_retry_after_is_honoured() -> None:
    rcv = FakeReceiver([(429, {"Retry-After": "2"}), 200])
    res = await run(rcv, cfg=DeliveryConfig(backoff_s=0.01))
    assert res.outcome == "delivered"
    assert rcv.calls[1] - rcv.calls[0] >= 2.0


async def test_a_4xx_is_rejected_at_once_with_status_and_excerpt() -> None:
    rcv = FakeReceiver([400])
    res = await run(rcv)
    assert (res.outcome, res.status, res.attempts) == ("rejected", 400, 1)
    assert res.excerpt.startswith("answer 400") and len(res.excerpt) == 500


async def test_the_deadline_ends_retries() -> None:
    rcv = FakeReceiver([503] * 100)
    res = await run(rcv, deadline_s=20)
    assert res.outcome == "expired" and res.status == 503
    assert rcv.calls[-1] - rcv.calls[0] <= 20


async def test_nothing_is_tried_after_the_deadline() -> None:
    rcv = FakeReceiver([200])
    res = await run(rcv, deadline_s=-1)
    assert res.outcome == "expired" and rcv.calls == []


def test_dead_letter_record_keeps_the_alert_and_says_why() -> None:
    raw = orjson.dumps(alert())
    rec = orjson.loads(dead_letter_record(topic="alerts", partition=2, offset=41, value=raw,
                                          receiver=Receiver("http://b/hook"), now_ms=5,
                                          result=Result("rejected", 400, "bad field", 1)))
    assert rec["source"] == {"topic": "alerts", "partition": 2, "offset": 41}
    assert rec["error"]["kind"] == "delivery" and "400" in rec["error"]["message"]
    assert rec["delivery"] == {"receiver": "http://b/hook", "outcome": "rejected", "status": 400,
                               "body_excerpt": "bad field", "attempts": 1}
    import base64
    assert orjson.loads(base64.b64decode(rec["payload_b64"])) == orjson.loads(raw)


async def test_a_redirect_is_a_failure_of_its_own_and_not_retried() -> None:
    rcv = FakeReceiver([(302, {"Location": "http://elsewhere/"}), 200])
    res = await run(rcv)
    assert (res.outcome, res.status, res.attempts) == ("redirected", 302, 1)
    assert "http://elsewhere/" in res.excerpt


async def test_unanswered_posts_are_bounded_by_max_copies() -> None:
    rcv = FakeReceiver([TimeoutError()] * 100)
    res = await run(rcv, cfg=DeliveryConfig(max_copies=2))
    assert (res.outcome, res.attempts, len(rcv.calls)) == ("timeout", 2, 2)
    refused = FakeReceiver([ConnectionRefusedError()] * 5 + [200])  # never reached the receiver: no copy
    assert (await run(refused, cfg=DeliveryConfig(max_copies=2))).outcome == "delivered"


def test_receivers_may_set_their_own_timeout_and_bound_on_copies() -> None:
    got = parse_receivers(["am+http://a/hook#timeout_ms=30000&max_copies=1", "http://b/"])
    assert got == (Receiver("http://a/hook", "alertmanager", 30.0, 1), Receiver("http://b/"))
    cfg = DeliveryConfig(timeout_s=10, max_copies=3)
    assert (cfg.for_receiver(got[0]).timeout_s, cfg.for_receiver(got[0]).max_copies) == (30.0, 1)
    assert (cfg.for_receiver(got[1]).timeout_s, cfg.for_receiver(got[1]).max_copies) == (10, 3)
    with pytest.raises(ConfigError, match="max_copies"):
        Settings.from_env({"STREAMPROC_WEBHOOK_URLS": "http://a/hook#max_copies=0"})
    with pytest.raises(ConfigError, match="unknown receiver option"):
        Settings.from_env({"STREAMPROC_WEBHOOK_URLS": "http://a/hook#retries=3"})
