"""Behaviour of the surge / drop detector on synthetic count series (no I/O, runs in about a second)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import orjson
import pytest

from streamproc.detectors import Decision, DetectorConfig, DetectorState, forecast, new_state, step

MINUTE_MS = 60_000
STEP5_MS = 5 * MINUTE_MS
T0_MS = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # a whole hour
CFG = DetectorConfig()


def run(values: np.ndarray | list[float], step_ms: int, cfg: DetectorConfig = CFG,
        state: DetectorState | None = None, start: int = 0) -> tuple[DetectorState, list[Decision]]:
    """Feed values (bucket i starts at T0 + (start + i) * step_ms); return the state and the decisions."""
    state = state or new_state(cfg)
    out = [step(state, float(v), T0_MS + (start + i) * step_ms, step_ms, cfg) for i, v in enumerate(values)]
    return state, out


def firings(decisions: list[Decision]) -> list[tuple[int, str | None]]:
    return [(i, d.kind) for i, d in enumerate(decisions) if d.transition == "firing"]


@pytest.mark.parametrize(("rate", "step_ms", "n"), [
    (0.05, MINUTE_MS, 30_000),   # 3 units an hour at 1-minute buckets: almost every bucket is empty
    (0.5, MINUTE_MS, 20_000),
    (3.0, STEP5_MS, 10_000),
    (20.0, STEP5_MS, 10_000),
    (300.0, STEP5_MS, 5_000),
])
def test_flat_poisson_series_never_alerts(rate: float, step_ms: int, n: int) -> None:
    values = np.random.default_rng(7).poisson(rate, n)
    _, decisions = run(values, step_ms)
    assert firings(decisions) == []
    assert all(0.0 <= d.score <= 1.0 for d in decisions)


def test_daily_cycle_is_learnt_and_does_not_alert() -> None:
    #   rate  ▁▁▂▄▆██▆▄▂▁▁ repeated for 10 days (1 to 40 per 5-minute bucket)
    t = np.arange(10 * 288)
    rate = 1.0 + 39.0 * (0.5 - 0.5 * np.cos(2 * np.pi * (t % 288) / 288))
    values = np.random.default_rng(3).poisson(rate)
    _, decisions = run(values, STEP5_MS)
    assert firings(decisions) == []
    last_day = slice(9 * 288, 10 * 288)
    expected = np.array([d.expected for d in decisions])[last_day]
    assert np.corrcoef(expected, rate[last_day])[0, 1] > 0.95


def test_five_fold_surge_fires_quickly_and_resolves_after_it_ends() -> None:
    #   10/bucket for 3 days │ 50/bucket for 24 buckets │ 10/bucket again
    rng = np.random.default_rng(11)
    base, surge_len = 3 * 288, 24
    values = np.concatenate([rng.poisson(10, base), rng.poisson(50, surge_len), rng.poisson(10, 200)])
    _, decisions = run(values, STEP5_MS)
    fired = firings(decisions)
    assert len(fired) == 1
    at, kind = fired[0]
    assert kind == "demand_surge"
    assert base <= at <= base + 2
    assert decisions[at].severity == "critical"
    resolved = [i for i, d in enumerate(decisions) if d.transition == "resolved"]
    assert len(resolved) == 1
    assert base + surge_len <= resolved[0] <= base + surge_len + 12
    assert all(d.kind == "demand_surge" for d in decisions[at:resolved[0] + 1])


def test_drop_to_zero_from_steady_sales_fires_demand_drop() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.poisson(20, 3 * 288), np.zeros(30)])
    _, decisions = run(values, STEP5_MS)
    fired = firings(decisions)
    assert [k for _, k in fired] == ["demand_drop"]
    assert 3 * 288 <= fired[0][0] <= 3 * 288 + 3


def test_sparse_series_single_two_unit_bucket_does_not_fire() -> None:
    # 3 units an hour at 1-minute buckets, for 3 days; then one bucket of 2 units
    values = np.random.default_rng(1).poisson(0.05, 3 * 1440).astype(float)
    state, decisions = run(values, MINUTE_MS)
    assert firings(decisions) == []
    d = step(state, 2.0, T0_MS + len(values) * MINUTE_MS, MINUTE_MS, CFG)
    assert d.transition is None and d.direction is None


def test_sparse_series_shows_a_sustained_surge_after_a_few_buckets() -> None:
    # 3 units an hour, then 2 units every minute: no single bucket is extreme, the run is
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.poisson(0.05, 3 * 1440), np.full(30, 2.0)])
    _, decisions = run(values, MINUTE_MS)
    fired = firings(decisions)
    assert [k for _, k in fired] == ["demand_surge"]
    assert 3 * 1440 + 2 <= fired[0][0] <= 3 * 1440 + 10


def test_no_alert_during_warm_up() -> None:
    values = [10.0] * 50 + [200.0] * 10
    _, decisions = run(values, STEP5_MS)
    assert firings(decisions) == []


def test_one_incident_at_a_time_and_cooldown() -> None:
    rng = np.random.default_rng(9)
    base = rng.poisson(10, 3 * 288)
    burst = np.full(6, 80.0)
    gap = rng.poisson(10, 36)  # 3 hours: within the cooldown
    values = np.concatenate([base, burst, gap, burst, rng.poisson(10, 50)])
    _, decisions = run(values, STEP5_MS)
    assert len(firings(decisions)) == 1


def test_state_round_trips_through_dict_and_orjson() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.poisson(6, 2 * 288), rng.poisson(40, 5), rng.poisson(6, 100)])
    state, _ = run(values, STEP5_MS)
    d = state.to_dict()
    numbers = sum(len(v) if isinstance(v, list) else 1 for v in d.values())
    assert numbers <= 60
    restored = DetectorState.from_dict(orjson.loads(orjson.dumps(d)))
    assert restored.to_dict() == json.loads(json.dumps(d))
    tail = rng.poisson(6, 300)
    _, a = run(tail, STEP5_MS, state=state, start=len(values))
    _, b = run(tail, STEP5_MS, state=restored, start=len(values))
    assert [(x.transition, x.direction) for x in a] == [(x.transition, x.direction) for x in b]
    assert np.allclose([x.expected for x in a], [x.expected for x in b], rtol=1e-6)


def test_forecast_sums_the_expected_rate_over_the_horizon() -> None:
    values = np.random.default_rng(8).poisson(4, 3 * 1440)
    state, _ = run(values, MINUTE_MS)
    next_ts = T0_MS + len(values) * MINUTE_MS
    assert forecast(state, 5, next_ts, MINUTE_MS, CFG) == pytest.approx(20.0, rel=0.25)
    assert forecast(state, 0, next_ts, MINUTE_MS, CFG) == 0.0


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="surge_ratio"):
        DetectorConfig(surge_ratio=0.5)
    with pytest.raises(ValueError, match="pending_steps"):
        DetectorConfig(pending_steps=0)


def weekly_rate(n: int, step_ms: int, base: float) -> np.ndarray:
    """``base`` per bucket on weekdays, x1.6 on Saturday and Sunday evenings (18-22 h UTC), x1.3 rest of the weekend."""
    t = T0_MS + np.arange(n) * step_ms
    day = (t // 86_400_000) % 7  # 0 = Thursday
    hour = (t % 86_400_000) // 3_600_000
    weekend = (day == 2) | (day == 3)
    return base * np.where(weekend & (hour >= 18) & (hour < 22), 1.6, np.where(weekend, 1.3, 1.0))


def test_weekly_rhythm_is_learnt_into_the_expectation() -> None:
    #   weekday ▁▁▁▁▁  weekend evening ▆ (x1.6): 8 weeks; the weekend evening expectation must rise
    n = 8 * 7 * 288
    rate = weekly_rate(n, STEP5_MS, 30.0)
    values = np.random.default_rng(21).poisson(rate)
    cfg = DetectorConfig(week_prior_weeks=1.0)
    _, decisions = run(values, STEP5_MS, cfg)
    assert firings(decisions) == []
    expected = np.array([d.expected for d in decisions])
    last_week = slice(n - 7 * 288, n)
    hi = rate[last_week] == 48.0
    lo = rate[last_week] == 30.0
    assert expected[last_week][hi].mean() > 1.25 * expected[last_week][lo].mean()


def test_weekly_profile_waits_for_history_and_stays_flat_for_a_sparse_product() -> None:
    # a product selling about one unit an hour: too little to trust an hour-of-week slot
    n = 3 * 7 * 288
    values = np.random.default_rng(22).poisson(weekly_rate(n, STEP5_MS, 1 / 12))
    state, _ = run(values, STEP5_MS)
    t_end = T0_MS + n * STEP5_MS
    sat_evening = next(t for t in range(t_end, t_end + 8 * 86_400_000, 3_600_000)
                       if (t // 86_400_000) % 7 == 2 and (t % 86_400_000) // 3_600_000 == 20)
    from streamproc.detectors import season
    day_only = DetectorConfig(week_prior_units=1e12)
    assert season(state, sat_evening, STEP5_MS, CFG) == pytest.approx(season(state, sat_evening, STEP5_MS, day_only),
                                                                      rel=0.05)


def test_return_to_normal_after_a_dip_is_not_a_surge() -> None:
    #   20/bucket for a week │ an outage-like day at 30% (a drop) │ back to 20: the way back is no surge
    rng = np.random.default_rng(23)
    values = np.concatenate([rng.poisson(20, 7 * 288), rng.poisson(6, 288), rng.poisson(20, 288)])
    cfg = DetectorConfig(cooldown_ms=3_600_000)
    _, decisions = run(values, STEP5_MS, cfg)
    assert "demand_surge" not in [k for _, k in firings(decisions)]
    _, without = run(values, STEP5_MS, dataclasses.replace(cfg, surge_long_run=0.0))
    assert "demand_surge" in [k for _, k in firings(without)]  # what the long-run floor is for


def test_alarm_gain_raises_the_bar_after_an_incident() -> None:
    rng = np.random.default_rng(24)
    base = rng.poisson(10, 3 * 288)
    #   10/bucket │ x4.5 for 4 buckets │ 25 h later x2.5 for 4 buckets: an alert each, unless the first one
    #   raised the bar
    values = np.concatenate([base, np.full(4, 45.0), rng.poisson(10, 300), np.full(4, 25.0), rng.poisson(10, 50)])
    cfg = DetectorConfig(cooldown_ms=3_600_000)
    _, plain = run(values, STEP5_MS, cfg)
    _, calibrated = run(values, STEP5_MS, dataclasses.replace(cfg, alarm_gain=2.0))
    assert len(firings(plain)) == 2
    assert len(firings(calibrated)) == 1


def test_week_profile_round_trips_exactly_and_is_compact() -> None:
    values = np.random.default_rng(25).poisson(weekly_rate(2 * 7 * 288, STEP5_MS, 12.0))
    state, _ = run(values, STEP5_MS)
    wire = orjson.dumps(state.to_dict())
    assert len(wire) < 2_500
    restored = DetectorState.from_dict(orjson.loads(wire))
    assert list(restored.week_means) == list(state.week_means)
    assert sum(m >= 0 for m in restored.week_means) == 168


def test_a_sparse_product_quiet_every_night_is_not_a_drop() -> None:
    #   ~7 units an hour from 6 h, none 0-6 h ▁ (a few days of history: the profile is still mostly flat)
    t = T0_MS + np.arange(4 * 288) * STEP5_MS
    hour = (t % 86_400_000) // 3_600_000
    rate = np.where(hour < 6, 0.0, 0.6)
    values = np.random.default_rng(26).poisson(rate)
    cfg = DetectorConfig(warmup_ms=3_600_000)
    _, decisions = run(values, STEP5_MS, cfg)
    assert firings(decisions) == []
    _, without = run(values, STEP5_MS, dataclasses.replace(cfg, drop_long_run=0.0))
    assert "demand_drop" in [k for _, k in firings(without)]  # what the long-run ceiling is for


def test_a_busy_hour_of_the_week_is_no_surge_once_seen_but_a_surge_on_top_of_it_is() -> None:
    # 2 orders a bucket, Saturday 00:00-06:00 UTC three times as busy, five weeks; in the fourth week a real
    # surge (3x on top) on Saturday 02:00-03:00. The first Saturday is new (it may alert); later ones must not
    day_buckets = 288
    n = 5 * 7 * day_buckets
    t = T0_MS + np.arange(n) * STEP5_MS
    dow, hour = (t // 86_400_000) % 7, (t % 86_400_000) // 3_600_000  # dow 2: Saturday (day 0 was a Thursday)
    rate = np.full(n, 2.0)
    rate[(dow == 2) & (hour < 6)] *= 3
    surge = (np.arange(n) // (7 * day_buckets) == 3) & (dow == 2) & (hour >= 2) & (hour < 3)
    rate[surge] *= 3
    values = np.random.default_rng(0).poisson(rate).astype(float)
    first_saturday = int(np.argmax((dow == 2) & (hour < 6)))
    fired = firings(run(values, STEP5_MS)[1])
    late = [i for i, _ in fired if i > first_saturday + day_buckets]
    assert [bool(surge[i]) for i in late] == [True]
    # with the floors per hour of day only, the busy Saturday nights of later weeks alert too
    day_only = dataclasses.replace(CFG, surge_long_run_week=False)
    late_day_only = [i for i, _ in firings(run(values, STEP5_MS, day_only)[1]) if i > first_saturday + day_buckets]
    assert sum(not surge[i] for i in late_day_only) >= 2
