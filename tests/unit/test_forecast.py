"""The units forecaster (streamproc.forecast): accuracy against naive forecasts, interval coverage, state."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from streamproc import detectors, forecast

STEP_MS = 300_000
T0_MS = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
DET = detectors.DetectorConfig()
FC = forecast.ForecastConfig()


def feed(values: np.ndarray, start: int = 0, det: detectors.DetectorState | None = None,
         fc: forecast.ForecastState | None = None) -> tuple[detectors.DetectorState, forecast.ForecastState, list]:
    """Run detector + forecaster as the engine does; return the next-bucket forecast made after each bucket."""
    det = det or detectors.new_state(DET)
    fc = fc or forecast.ForecastState()
    out = []
    for i, x in enumerate(values):
        t = T0_MS + (start + i) * STEP_MS
        detectors.step(det, float(x), t, STEP_MS, DET)
        forecast.update(fc, float(x), t, STEP_MS, det, DET, FC)
        out.append(forecast.predict(fc, 1, t + STEP_MS, STEP_MS, det, DET))
    return det, fc, out


def test_forecast_follows_a_level_shift_faster_than_the_detector() -> None:
    #   10/bucket for 3 days │ 25/bucket from then on: an hour later the forecast is near 25
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.poisson(10, 3 * 288), rng.poisson(25, 24)])
    det, _, out = feed(values)
    assert out[3 * 288 + 12].expected == pytest.approx(25, rel=0.2)
    d_expected = detectors.forecast(det, 1, T0_MS + len(values) * STEP_MS, STEP_MS, DET)
    assert abs(out[-1].expected - 25) < abs(d_expected - 25)


def test_beats_last_value_on_a_noisy_daily_cycle_and_covers_about_80_percent() -> None:
    t = np.arange(14 * 288)
    rate = 5 + 25 * (0.5 - 0.5 * np.cos(2 * np.pi * (t % 288) / 288))
    values = np.random.default_rng(2).poisson(rate)
    _, _, out = feed(values)
    after = slice(7 * 288, len(values) - 1)
    nxt = values[1:][after]
    f = np.array([o.expected for o in out[after]])
    lo = np.array([o.low for o in out[after]])
    hi = np.array([o.high for o in out[after]])
    mae, naive = np.abs(f - nxt).mean(), np.abs(values[:-1][after] - nxt).mean()
    assert mae < 0.9 * naive
    assert 0.75 <= ((lo <= nxt) & (nxt <= hi)).mean() <= 0.85


def test_hour_forecast_interval_is_calibrated_online() -> None:
    # overdispersed counts (NB, mean 8): the hour interval's coverage after two weeks is near 80%
    values = np.random.default_rng(3).negative_binomial(2, 2 / (2 + 8), 28 * 288).astype(float)
    det, fc = detectors.new_state(DET), forecast.ForecastState()
    hits = []
    for i, x in enumerate(values):
        t = T0_MS + i * STEP_MS
        detectors.step(det, x, t, STEP_MS, DET)
        forecast.update(fc, x, t, STEP_MS, det, DET, FC)
        if i >= 14 * 288 and i % 12 == 0 and i + 13 <= len(values):
            h = forecast.predict(fc, 12, t + STEP_MS, STEP_MS, det, DET)
            hits.append(h.low <= values[i + 1:i + 13].sum() <= h.high)
    assert 0.72 <= np.mean(hits) <= 0.88


def test_interval_ends_are_ordered_and_not_negative() -> None:
    values = np.random.default_rng(4).poisson(0.2, 2 * 288)
    det, fc, out = feed(values)
    assert all(0.0 <= o.low <= o.expected <= o.high for o in out)
    f5, f1 = forecast.units_ahead(fc, det, T0_MS + len(values) * STEP_MS, STEP_MS, DET)
    assert f1.expected == pytest.approx(12 * f5.expected, rel=0.5)


def test_no_history_forecasts_zero() -> None:
    det, fc = detectors.new_state(DET), forecast.ForecastState()
    assert forecast.predict(fc, 12, T0_MS, STEP_MS, det, DET) == forecast.Forecast(0.0, 0.0, 0.0)


def test_state_round_trips_and_continues_identically() -> None:
    values = np.random.default_rng(5).poisson(7, 2 * 288)
    det, fc, _ = feed(values)
    wire = orjson.dumps(fc.to_dict())
    assert len(orjson.loads(wire)) <= 21
    restored = forecast.ForecastState.from_dict(orjson.loads(wire))
    det_copy = detectors.DetectorState.from_dict(orjson.loads(orjson.dumps(det.to_dict())))
    tail = np.random.default_rng(6).poisson(7, 50)
    _, _, a = feed(tail, len(values), det, fc)
    _, _, b = feed(tail, len(values), det_copy, restored)
    assert a == b


def test_next_bucket_interval_is_calibrated_on_its_own_horizon() -> None:
    # a busy Poisson series: the next-bucket interval must cover about 80% of the next buckets
    values = np.random.default_rng(7).poisson(30, 10 * 288).astype(float)
    _, fc, out = feed(values)
    after = slice(5 * 288, len(values) - 1)
    nxt = values[1:][after]
    lo = np.array([o.low for o in out[after]])
    hi = np.array([o.high for o in out[after]])
    assert 0.75 <= ((lo <= nxt) & (nxt <= hi)).mean() <= 0.85
    assert 0.5 < fc.scale_next < 2.0


def test_next_bucket_leans_on_the_last_value_only_where_that_pays() -> None:
    # lone spikes (one bucket at 5x, every 10 buckets) vs jumps that last (a new rate every 6 buckets)
    rng = np.random.default_rng(9)
    n = 4 * 288
    spiky = rng.poisson(20, n).astype(float)
    spiky[5::10] *= 5
    lasting = rng.poisson(np.repeat(rng.uniform(10, 60, n // 6 + 1), 6)[:n]).astype(float)
    _, _, after_spikes = feed(spiky)
    _, _, after_jumps = feed(lasting)
    # the forecast made right after a spike stays near the usual 20 (the level is not dragged either)
    assert np.median([after_spikes[i].expected for i in range(3 * 288 + 5, n, 10)]) < 30
    # where a new rate lasts, the forecast right after a jump is most of the way to it
    i = [k for k in range(3 * 288, n - 1, 6) if abs(lasting[k] - lasting[k - 1]) > 20]
    gap = np.array([abs(after_jumps[k].expected - lasting[k + 1]) for k in i])
    stay = np.array([abs(after_jumps[k - 1].expected - lasting[k + 1]) for k in i])
    assert np.median(gap) < 0.6 * np.median(stay)


def test_a_snapshot_of_the_previous_forecaster_restores_and_forecasts() -> None:
    old = {"level": 8.0, "disp_num": 1.0, "disp_den": 50.0, "scale_next": 1.1, "scale_hour": 0.9, "prev_low": 4.0,
           "prev_high": 12.0, "hour_start_ms": -1, "hour_low": 0.0, "hour_high": 0.0, "hour_sum": 0.0,
           "hour_seen": 0, "resid": 0.0, "ar_num": 0.0, "ar_den": 0.0, "steps": 500}
    det, fc = detectors.new_state(DET), forecast.ForecastState.from_dict(old)
    f5, f1 = forecast.units_ahead(fc, det, T0_MS, STEP_MS, DET)
    assert f5.expected == pytest.approx(8.0) and f1.expected == pytest.approx(96.0)
    _, _, out = feed(np.full(12, 8.0), det=det, fc=fc)
    assert all(o.expected == pytest.approx(8.0, rel=0.2) for o in out)
