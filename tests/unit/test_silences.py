"""Silences (matchers, time range, persistence records, HTTP API) and the notifier that applies them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamproc.alerts import new_alert, resolve_alert
from streamproc.categories import category_alert
from streamproc.clock import FakeClock
from streamproc.demand import Output
from streamproc.lifecycle import Notifier, inhibitor
from streamproc.silences import InvalidSilence, Matcher, SilenceService, SilenceStore, parse_silence
from streamproc.web_silences import add_silence_routes

T0 = 1_700_000_000_000
MIN = 60_000
HOUR = 60 * MIN


def alert(pid: str = "P1", category: str | None = "shoes", signal: str = "orders") -> dict[str, Any]:
    return new_alert(alertname="demand_surge", signal=signal, product_id=pid, category=category,
                     severity="warning", window_start_ms=T0, window_end_ms=T0 + MIN,
                     observed=30, expected=2.0, score=0.9)


def outs(*alerts: dict[str, Any]) -> list[Output]:
    return [Output("alert", a["dedup_key"], a) for a in alerts]


# -- matchers and silences ----------------------------------------------------------------------


@pytest.mark.parametrize(("m", "labels", "hit"), [
    (Matcher("product_id", "P1"), {"product_id": "P1"}, True),
    (Matcher("product_id", "P1"), {"product_id": "P2"}, False),
    (Matcher("product_id", "P1", is_equal=False), {"product_id": "P2"}, True),
    (Matcher("product_id", "P.*", is_regex=True), {"product_id": "P123"}, True),
    (Matcher("product_id", "P1", is_regex=True), {"product_id": "P12"}, False),  # anchored
    (Matcher("category", "shoes|bags", is_regex=True, is_equal=False), {"category": "toys"}, True),
    (Matcher("category", ""), {"category": None}, True),  # a missing label is the empty string
])
def test_matchers(m: Matcher, labels: dict[str, Any], hit: bool) -> None:
    assert m.matches(labels) is hit


def test_a_silence_mutes_matching_alerts_only_and_only_while_active() -> None:
    clock = FakeClock(T0)
    s = parse_silence({"matchers": [{"name": "product_id", "value": "P1"}], "startsAt": T0 + MIN,
                       "endsAt": T0 + 10 * MIN, "comment": "planned sale"}, clock.now_ms())
    assert s.state(clock.now_ms()) == "pending"
    assert not s.mutes(alert("P1")["labels"], clock.now_ms())
    clock.advance(MIN)
    assert s.mutes(alert("P1")["labels"], clock.now_ms())
    assert not s.mutes(alert("P2")["labels"], clock.now_ms())
    clock.advance(9 * MIN)  # endsAt is exclusive
    assert s.state(clock.now_ms()) == "expired" and not s.mutes(alert("P1")["labels"], clock.now_ms())


def test_times_may_be_rfc3339_and_start_defaults_to_now() -> None:
    s = parse_silence({"matchers": {"product_id": "P1"}, "endsAt": "2023-11-14T23:23:20+01:00"}, T0)
    assert s.starts_at_ms == T0 and s.ends_at_ms == T0 + 10 * MIN
    assert s.matchers == (Matcher("product_id", "P1"),)


@pytest.mark.parametrize(("body", "why"), [
    ([], "JSON object"),
    ({"endsAt": T0 + MIN}, "matchers"),
    ({"matchers": [], "endsAt": T0 + MIN}, "matchers"),
    ({"matchers": [{"name": "a"}], "endsAt": T0 + MIN}, "string value"),
    ({"matchers": [{"name": "a", "value": "("}], "endsAt": T0 + MIN}, None),
    ({"matchers": [{"name": "a", "value": "(", "isRegex": True}], "endsAt": T0 + MIN}, "regular expression"),
    ({"matchers": [{"name": "a", "value": ".*", "isRegex": True}], "endsAt": T0 + MIN}, "without any labels"),
    ({"matchers": {"a": "b"}}, "endsAt"),
    ({"matchers": {"a": "b"}, "endsAt": "tomorrow"}, "RFC 3339"),
    ({"matchers": {"a": "b"}, "startsAt": T0 + 2 * MIN, "endsAt": T0 + MIN}, "after startsAt"),
    ({"matchers": {"a": "b"}, "startsAt": T0 - 2 * MIN, "endsAt": T0 - MIN}, "past"),
])
def test_bad_silences_are_refused_with_a_reason(body: Any, why: str | None) -> None:
    if why is None:
        parse_silence(body, T0)  # a literal "(" is fine when it is not a regex
        return
    with pytest.raises(InvalidSilence, match=why):
        parse_silence(body, T0)


async def test_service_persists_every_change_and_the_records_rebuild_the_store() -> None:
    written: list[tuple[str, bytes | None]] = []

    async def persist(sid: str, value: bytes | None) -> None:
        written.append((sid, value))

    store = SilenceStore()
    svc = SilenceService(store, persist)
    s = await svc.create({"matchers": {"product_id": "P1"}, "endsAt": T0 + HOUR}, T0)
    await svc.create({"matchers": {"product_id": "P2"}, "endsAt": T0 + HOUR}, T0)
    expired = await svc.expire(s.id, T0 + MIN)
    assert expired is not None and expired.state(T0 + MIN) == "expired"
    assert await svc.expire("nope", T0) is None
    assert len(written) == 3

    again = SilenceStore()  # a restarted worker reading the compacted topic
    for sid, value in written:
        again.apply(sid.encode(), value)
    assert again.silences == store.silences
    assert again.muting(alert("P1")["labels"], T0 + 2 * MIN) == []
    assert len(again.muting(alert("P2")["labels"], T0 + 2 * MIN)) == 1

    await svc.collect_garbage(T0 + 10 * 86_400_000)
    assert store.silences == {} and written[-1][1] is None  # tombstones
    for sid, value in written:
        again.apply(sid.encode(), value)
    assert again.silences == {}


# -- the notifier: silences, expiry, repeats, inhibition -----------------------------------------


def test_silenced_alerts_are_marked_others_not() -> None:
    clock = FakeClock(T0)
    store = SilenceStore()
    store.put(parse_silence({"matchers": {"product_id": "P1"}, "endsAt": T0 + 10 * MIN}, T0, new_id="s1"))
    n = Notifier(silences=store)
    got = {o.value["labels"]["product_id"]: o.value for o in n.process(outs(alert("P1"), alert("P2")),
                                                                        clock.now_ms())}
    assert got["P1"]["silenced"] is True and got["P1"]["silenced_by"] == ["s1"]
    assert "silenced" not in got["P2"] and "silenced_by" not in got["P2"]


def test_a_silence_expires_on_time_and_the_incident_then_pages() -> None:
    clock = FakeClock(T0)
    store = SilenceStore()
    store.put(parse_silence({"matchers": {"product_id": "P1"}, "endsAt": T0 + 10 * MIN}, T0, new_id="s1"))
    n = Notifier(silences=store)
    first = n.process(outs(alert("P1")), clock.now_ms())
    assert first[0].value["silenced"] is True
    clock.advance(10 * MIN - 1)
    assert n.process([], clock.now_ms()) == []  # still silenced: nothing new
    clock.advance(1)
    again = n.process([], clock.now_ms())
    assert len(again) == 1 and "silenced" not in again[0].value
    assert again[0].value["alert_id"] == first[0].value["alert_id"]
    clock.advance(MIN)
    assert n.process([], clock.now_ms()) == []


def test_firing_incidents_are_repeated_after_the_repeat_interval_only() -> None:
    clock = FakeClock(T0)
    n = Notifier(repeat_interval_ms=4 * HOUR)
    a = alert()
    assert len(n.process(outs(a), clock.now_ms())) == 1
    clock.advance(4 * HOUR - 1)
    assert n.process([], clock.now_ms()) == []
    clock.advance(1)
    rep = n.process([], clock.now_ms())
    assert [(o.value["alert_id"], o.value["repeat"]) for o in rep] == [(a["alert_id"], 1)]
    clock.advance(HOUR)
    resolved = resolve_alert(a, window_start_ms=T0 + 5 * HOUR, window_end_ms=T0 + 5 * HOUR + MIN,
                             observed=1, expected=2, score=0.1)
    assert [o.value["status"] for o in n.process(outs(resolved), clock.now_ms())] == ["resolved"]
    clock.advance(8 * HOUR)
    assert n.process([], clock.now_ms()) == []  # resolved: no more repeats


def test_a_category_surge_inhibits_the_product_surges_inside_it() -> None:
    clock = FakeClock(T0)
    n = Notifier()
    cat = category_alert(category="shoes", signal="orders", severity="critical", window_start_ms=T0,
                         window_end_ms=T0 + MIN, observed=500, expected=50, score=1.0)
    got = [o.value for o in n.process(outs(alert("P1"), cat, alert("P2", "bags"), alert("P3", signal="clicks")),
                                       clock.now_ms())]
    by_key = {a["dedup_key"]: a for a in got}
    assert by_key["demand_surge:orders:P1"]["inhibited_by"] == cat["dedup_key"]
    assert "inhibited_by" not in by_key["demand_surge:orders:P2"]  # other category
    assert "inhibited_by" not in by_key["demand_surge:clicks:P3"]  # other signal
    assert "inhibited_by" not in by_key[cat["dedup_key"]]
    assert inhibitor(cat, n.firing_categories) is None

    # Its end carries the same mark: the receiver never heard of its start.
    p1_end = resolve_alert(alert("P1"), window_start_ms=T0 + MIN, window_end_ms=T0 + 2 * MIN, observed=1,
                           expected=2, score=0.1)
    assert n.process(outs(p1_end), clock.now_ms())[0].value["inhibited_by"] == cat["dedup_key"]

    cat_end = resolve_alert(cat, window_start_ms=T0 + MIN, window_end_ms=T0 + 2 * MIN, observed=50,
                            expected=50, score=0.1)
    later = n.process(outs(cat_end, alert("P4")), clock.now_ms())
    assert all("inhibited_by" not in o.value for o in later)


def test_restore_after_restart_neither_repeats_early_nor_forgets() -> None:
    n = Notifier(repeat_interval_ms=HOUR)
    n.restore([alert("P1")], T0)
    assert n.process([], T0 + HOUR - 1) == []
    assert len(n.process([], T0 + HOUR)) == 1


# -- HTTP API -----------------------------------------------------------------------------------


async def test_silence_api(aiohttp_client: Any) -> None:
    from aiohttp import web

    clock = FakeClock(T0)
    store = SilenceStore()
    app = web.Application()
    add_silence_routes(app, SilenceService(store), clock)
    client = await aiohttp_client(app)

    r = await client.post("/silences", data=orjson.dumps({
        "matchers": [{"name": "product_id", "value": "P1"}], "endsAt": "2023-11-15T00:00:00Z",
        "comment": "sale", "createdBy": "ops"}))
    assert r.status == 200
    sid = (await r.json())["silenceID"]
    r = await client.post("/silences", data=b"{not json")
    assert r.status == 400
    r = await client.post("/silences", data=orjson.dumps({"matchers": {}, "endsAt": T0 + MIN}))
    assert r.status == 400 and "matchers" in (await r.json())["error"]

    listed = (await (await client.get("/silences")).json())["silences"]
    assert [(s["id"], s["status"]["state"], s["comment"]) for s in listed] == [(sid, "active", "sale")]
    assert (await (await client.get(f"/silences/{sid}")).json())["createdBy"] == "ops"

    r = await client.delete(f"/silences/{sid}")
    assert r.status == 200 and (await r.json())["status"]["state"] == "expired"
    assert store.muting({"product_id": "P1"}, clock.now_ms()) == []
    assert (await client.delete("/silences/nope")).status == 404
    assert (await (await client.get("/silences?state=active")).json())["silences"] == []


def test_incidents_of_partitions_moved_away_are_not_repeated_here() -> None:
    mine = {"P1"}
    n = Notifier(repeat_interval_ms=HOUR, owned=lambda a: a["labels"]["product_id"] in mine)
    n.process(outs(alert("P1"), alert("P2")), T0)
    assert [o.value["labels"]["product_id"] for o in n.process([], T0 + HOUR)] == ["P1"]


def test_matchers_cannot_backtrack_exponentially() -> None:
    """``(a+)+$`` took 0.56 s on 25 characters with Python's re, doubling per character; a label value may
    have 200. RE2 answers in linear time (run in a subprocess so that a regression fails instead of hanging)."""
    import subprocess
    import sys

    code = ("from streamproc.silences import parse_silence\n"
            "s = parse_silence({'matchers': [{'name': 'product_id', 'value': '(a+)+$', 'isRegex': True}],"
            " 'endsAt': 2_000_000_000_000}, 1_000_000_000_000)\n"
            "for n in (25, 40, 200):\n"
            "    assert not s.mutes({'product_id': 'a' * n + 'b'}, 1_500_000_000_000)\n"
            "assert s.mutes({'product_id': 'a' * 200}, 1_500_000_000_000)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=P)P1", "x" * 1001])
def test_patterns_outside_re2_are_refused_with_a_reason(pattern: str) -> None:
    with pytest.raises(InvalidSilence, match="regular expression"):
        parse_silence({"matchers": [{"name": "product_id", "value": pattern, "isRegex": True}],
                       "endsAt": 2_000_000_000_000}, 1_000_000_000_000)


def test_alertmanager_style_patterns_still_match() -> None:
    s = parse_silence({"matchers": [{"name": "product_id", "value": "P1|P2.*", "isRegex": True}],
                       "endsAt": 2_000_000_000_000}, 1_000_000_000_000)
    now = 1_500_000_000_000
    assert s.mutes({"product_id": "P1"}, now) and s.mutes({"product_id": "P23"}, now)
    assert not s.mutes({"product_id": "xP1"}, now) and not s.mutes({"product_id": "P1x"}, now)
