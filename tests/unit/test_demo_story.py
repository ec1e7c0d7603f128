"""What the demo prints: the plan of the real demo scenario, each injection announced once when it starts,
and each alert once, marked as matching an injection or not."""

from __future__ import annotations

from typing import Any

from streamproc import alerts as alerts_mod
from streamproc import generator
from streamproc.demo_story import Injection, Story, injections, matching_injection

MIN = 60_000
LIVE = 1_765_000_000_000 - 1_765_000_000_000 % MIN + 17_000  # the demo starts at an arbitrary wall-clock time
HISTORY = 30 * MIN


def demo_plan() -> list[Injection]:
    sc = generator.scenario("demo", start_ms=LIVE - HISTORY, duration_ms=HISTORY + 4 * 60 * MIN, rate_eps=40.0,
                            seed=7, warmup_ms=HISTORY)
    return injections(generator.truth(sc))


def alert(name: str, pid: str, start_ms: int, *, signal: str = "orders", minutes: int = 1,
          status: str = "firing", severity: str = "warning") -> dict[str, Any]:
    a = alerts_mod.new_alert(alertname=name, signal=signal, product_id=pid, category="books", severity=severity,
                             window_start_ms=start_ms, window_end_ms=start_ms + minutes * MIN, observed=30,
                             expected=3, score=0.9)
    if status == "resolved":
        a = alerts_mod.resolve_alert(a, window_start_ms=start_ms + 30 * MIN, window_end_ms=start_ms + 31 * MIN,
                                     observed=3, expected=3, score=0.1)
    return a


def test_the_demo_injects_surges_negative_review_spikes_and_drops_numbered_in_start_order() -> None:
    plan = demo_plan()
    assert [i.number for i in plan] == list(range(1, len(plan) + 1))
    assert [i.kind for i in plan[:3]] == ["demand_surge", "negative_review_spike", "demand_drop"]
    assert all(a.start_ms <= b.start_ms for a, b in zip(plan, plan[1:], strict=False))
    assert all(i.start_ms >= LIVE for i in plan)  # nothing is injected into the history
    assert plan[0].what().startswith("x10 demand surge on P")
    assert plan[2].what().startswith("demand drop (no orders")


def test_the_plan_lists_what_comes_within_the_horizon_and_counts_the_rest() -> None:
    plan = demo_plan()
    story = Story(plan, LIVE, 10.0)
    lines = story.plan_lines(horizon_ms=40 * MIN)
    listed = [ln for ln in lines if ln.strip().startswith("#")]
    assert len(listed) == 3 and "+1 min is about 6 s" in lines[0]
    assert listed[0].split()[:5] == ["#1", "+4", "min", "to", "+16"]
    assert f"and {len(plan) - 3} more later" in lines[-2]


def test_each_injection_is_announced_once_when_its_start_is_reached() -> None:
    plan = demo_plan()
    story = Story(plan, LIVE, 10.0)
    assert list(story.starting(plan[0].start_ms - 1)) == []
    first = list(story.starting(plan[0].start_ms))
    assert len(first) == 1 and first[0].startswith("[inject]") and "#1 starts: x10 demand surge" in first[0]
    assert list(story.starting(plan[0].start_ms + MIN)) == []  # not again
    both = list(story.starting(plan[2].start_ms))  # #2 and #3 both due now: one line each, in order
    assert [ln.split()[3] for ln in both] == ["#2", "#3"]


def test_an_alert_matches_the_injection_of_the_same_kind_product_and_time() -> None:
    plan = demo_plan()
    surge, neg, drop = plan[:3]
    assert matching_injection(alert("demand_surge", surge.product_id, surge.start_ms + 2 * MIN), plan) == surge
    # the clicks signal of the same product counts too
    assert matching_injection(alert("demand_surge", surge.product_id, surge.start_ms, signal="clicks"), plan) == surge
    assert matching_injection(alert("demand_drop", drop.product_id, drop.start_ms + 5 * MIN), plan) == drop
    # a review window that began before the injection but reaches into it
    spike = alert("negative_review_spike", neg.product_id, neg.start_ms - 3 * MIN, signal="reviews", minutes=5)
    assert matching_injection(spike, plan) == neg
    # wrong kind, wrong product, or long before / after: not injected
    assert matching_injection(alert("demand_drop", surge.product_id, surge.start_ms + 2 * MIN), plan) is None
    assert matching_injection(alert("demand_surge", "P99999", surge.start_ms + 2 * MIN), plan) is None
    assert matching_injection(alert("demand_surge", surge.product_id, surge.start_ms - 20 * MIN), plan) is None
    assert matching_injection(alert("demand_surge", surge.product_id, surge.end_ms + 15 * MIN), plan) is None


def test_alert_lines_are_marked_printed_once_and_summed_up() -> None:
    plan = demo_plan()
    surge = plan[0]
    story = Story(plan, LIVE, 10.0)
    list(story.starting(plan[1].start_ms))
    hit = alert("demand_surge", surge.product_id, surge.start_ms + MIN)
    line = story.alert_line(hit)
    assert line is not None and "[injection #1]" in line and f"demand_surge           {surge.product_id}" in line
    assert line.split()[1:3] == ["+6", "min"]  # event time of the window's end, from the live start
    assert story.alert_line(hit) is None  # a redelivery is not printed again
    escalated = {**hit, "labels": {**hit["labels"], "severity": "critical"}}
    assert story.alert_line(escalated) is not None
    organic = alert("negative_review_spike", "P00001", LIVE - 10 * MIN, signal="reviews", minutes=5)
    assert "[not injected: from the shop's ordinary traffic]" in (story.alert_line(organic) or "")
    resolved = alert("demand_surge", surge.product_id, surge.start_ms + MIN, status="resolved")
    assert "[injection #1]" in (story.alert_line(resolved) or "")  # long after the injection, still #1
    assert story.summary() == ("2 alerts fired (1 matching an injection, 1 not injected), 1 resolved; "
                               "1 of 2 started injections alerted (no alert yet for #2)")


def test_a_category_alert_matches_an_injection_on_a_product_of_that_category() -> None:
    inj = Injection(1, "demand_surge", "P00010", "books", LIVE, LIVE + 10 * MIN, 10.0)
    from streamproc.categories import category_alert

    a = category_alert(category="books", signal="orders", severity="warning", window_start_ms=LIVE + MIN,
                       window_end_ms=LIVE + 2 * MIN, observed=50, expected=5, score=0.9)
    assert matching_injection(a, [inj]) == inj
    line = Story([inj], LIVE, 10.0).alert_line(a) or ""
    assert "category:books" in line and "[injection #1, via its category]" in line
    other = category_alert(category="toys", signal="orders", severity="warning", window_start_ms=LIVE + MIN,
                           window_end_ms=LIVE + 2 * MIN, observed=50, expected=5, score=0.9)
    assert matching_injection(other, [inj]) is None


def test_triggers_line_reports_counts_by_kind_and_the_latest_only_when_they_changed() -> None:
    story = Story(demo_plan(), LIVE, 10.0)
    view: dict[str, Any] = {"counts": {"cart_abandoned": 0, "browse_abandoned": 0, "win_back": 0,
                                       "interest_surging": 0}, "total": 0, "latest": []}
    assert story.triggers_line(view, LIVE) is None  # nothing yet
    view = {"counts": {"cart_abandoned": 1200, "browse_abandoned": 3, "win_back": 1, "interest_surging": 0},
            "total": 1204, "latest": [{"kind": "cart_abandoned", "user_id": "U000042", "product_ids": ["P00007"]}]}
    line = story.triggers_line(view, LIVE + 3 * MIN)
    assert line == ("[triggers]  +3 min  1,204 published: cart abandoned 1,200 · browse abandoned 3 · win-back 1 · "
                    "interest surging 0; latest: cart abandoned (P00007)")
    assert "U000042" not in line
    assert story.triggers_line(view, LIVE + 4 * MIN) is None  # unchanged
    assert story.summary().endswith("; 1,204 marketing triggers")
