"""Demand forecast per product: pure Python, no I/O, no clock; O(1) per product per bucket.

Separate from the detector's expectation, which is deliberately slow and robust (right for testing
"is this bucket unusual", wrong for "how much will sell next"). The forecast is

    next buckets = level * season(t)

* ``season(t)`` is the detector's hierarchical hour-of-week / hour-of-day / flat factor
  (:func:`streamproc.detectors.season`): long memory, shared, so it costs no state here.
* ``level`` is a fast exponentially weighted mean of deseasonalised counts (half-life
  ``level_halflife_ms``), with observations winsorised tightly (``clip_sd`` standard deviations), so it
  follows the median rather than the mean and a one-bucket spike barely moves the next hour's forecast;
  while the detector has an incident open the clip widens (``shift_clip_sd``) so the level follows a
  real surge or drop within a few buckets.
* **Persistence**: what is left over (``x - level * season``, relative to the season) follows an
  AR(1) whose coefficient ``phi`` is an exponentially weighted regression of each residual on the one
  before (clamped to [0, 0.95]); the forecast adds ``phi**i`` of the last residual to bucket ``i``, so a
  burst that has just started is carried into the next buckets and fades.
* **80% interval**: counts are negative binomial around the forecast with the forecaster's own
  overdispersion (an exponentially weighted ratio of ``(x - mu)**2 - mu`` to ``mu**2``), so a sum of
  ``h`` buckets has variance ``h*mu + alpha*(h*mu)**2`` (the level error is shared by all buckets of
  the horizon). The half-width ``z * sqrt(var)`` is scaled by a factor per horizon that is calibrated
  online to miss 20% of outcomes (a quantile tracker: after a miss it grows, after a hit it shrinks),
  checked every bucket for the next bucket and once an hour for the next hour.

State: 16 numbers (:class:`ForecastState`, slotted): about 650 bytes in memory, up to about 430 in a JSON snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from . import detectors

__all__ = ["ForecastConfig", "ForecastState", "Forecast", "update", "predict", "units_ahead"]

Z80 = 1.2815515655446004  # standard normal quantile of 0.9: a central 80% interval


@dataclass(frozen=True)
class ForecastConfig:
    """Forecaster settings (chosen on the NAB Twitter series by ``benchmarks/forecast_eval.py``)."""

    level_halflife_ms: int = 30 * 60_000
    """Memory of the fast level."""
    clip_sd: float = 0.5
    """Observations are clipped to forecast +/- this many standard deviations before updating the level:
    a tight clip makes the level track the median, which is what minimises absolute error on bursty counts."""
    shift_clip_sd: float = 4.0
    """The clip while the detector has an incident open (a surge or drop): the level then follows the change."""
    dispersion_halflife_ms: int = 2 * 86_400_000
    """Memory of the overdispersion estimate."""
    coverage: float = 0.8
    """Target share of outcomes inside the interval."""
    calibration_step: float = 0.05
    """Log-step of the interval scale after each checked outcome."""


@dataclass(slots=True)
class ForecastState:
    """What the forecaster remembers about one series."""

    level: float = -1.0
    """Deseasonalised count per bucket; -1 before the first bucket."""
    disp_num: float = 0.0
    disp_den: float = 0.0
    scale_next: float = 1.0
    """Calibrated multiplier of the next-bucket interval's half-width."""
    scale_hour: float = 1.0
    """Calibrated multiplier of the next-hour interval's half-width."""
    prev_low: float = -1.0
    """Interval issued for the bucket now closing (-1: none yet)."""
    prev_high: float = -1.0
    hour_start_ms: int = -1
    """Start of the hour whose issued interval is being checked (-1: none)."""
    hour_low: float = 0.0
    hour_high: float = 0.0
    hour_sum: float = 0.0
    """Units seen so far in that hour."""
    hour_seen: int = 0
    """Buckets seen so far in that hour."""
    resid: float = 0.0
    """Last deseasonalised residual (units per bucket at season 1)."""
    ar_num: float = 0.0
    """Exponentially weighted sum of residual * previous residual."""
    ar_den: float = 0.0
    """Exponentially weighted sum of previous residual squared; phi = ar_num / ar_den."""
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _STATE_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ForecastState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})


_STATE_FIELDS = tuple(f.name for f in fields(ForecastState))


@dataclass(frozen=True)
class Forecast:
    """Expected total over a horizon with an interval of the configured coverage."""

    expected: float
    low: float
    high: float


def _decay(step_ms: int, halflife_ms: float) -> float:
    return 0.5 ** (step_ms / halflife_ms)


def _alpha(state: ForecastState) -> float:
    prior_w = state.disp_den / max(state.steps, 1)  # one bucket's worth of a 0.1 prior
    a = (state.disp_num + 0.1 * prior_w) / (state.disp_den + prior_w) if state.disp_den > 0 else 0.1
    return min(max(a, 0.0), 25.0)


def _interval(total: float, buckets: int, alpha: float, scale: float) -> tuple[float, float]:
    half = Z80 * scale * math.sqrt(total + alpha * total * total)
    return max(total - half, 0.0), total + half


def _calibrate(scale: float, hit: bool, cfg: ForecastConfig) -> float:
    # quantile tracking: E[log-step] = 0 exactly when the miss rate is 1 - coverage
    step = cfg.calibration_step * ((1.0 - cfg.coverage) if hit else -cfg.coverage)
    return min(max(scale * math.exp(-step), 0.05), 20.0)


def update(state: ForecastState, value: float, ts_ms: int, step_ms: int, det: detectors.DetectorState,
           det_cfg: detectors.DetectorConfig, cfg: ForecastConfig) -> None:
    """Consume the count of the bucket starting at ``ts_ms``; ``det`` supplies the seasonal profile."""
    x = max(float(value), 0.0)
    s = max(detectors.season(det, ts_ms, step_ms, det_cfg), 0.05)
    alpha = _alpha(state)
    # check the intervals issued earlier against what happened
    if state.prev_high >= 0:
        state.scale_next = _calibrate(state.scale_next, state.prev_low <= x <= state.prev_high, cfg)
    if state.hour_start_ms >= 0 and ts_ms >= state.hour_start_ms:
        state.hour_sum += x
        state.hour_seen += 1
        if ts_ms + step_ms >= state.hour_start_ms + detectors.HOUR_MS:
            hit = state.hour_low <= state.hour_sum <= state.hour_high
            state.scale_hour = _calibrate(state.scale_hour, hit, cfg)
            state.hour_start_ms = -1
    if state.level < 0:
        state.level = x / s
    else:
        mu = max(state.level * s, 1e-3)
        sd = math.sqrt(mu * (1.0 + alpha * mu))
        clip = cfg.clip_sd if det.firing is None else cfg.shift_clip_sd
        xc = min(max(x, mu - clip * sd), mu + clip * sd + 1.0)
        a = 1.0 - _decay(step_ms, cfg.level_halflife_ms)
        state.level += a * (xc / s - state.level)
        d = _decay(step_ms, cfg.dispersion_halflife_ms)
        r = x / s - state.level
        state.ar_num = d * state.ar_num + r * state.resid
        state.ar_den = d * state.ar_den + state.resid * state.resid
        state.resid = r
        state.disp_num = d * state.disp_num + (x - mu) ** 2 - mu
        state.disp_den = d * state.disp_den + mu * mu
    state.steps += 1
    nxt = predict(state, 1, ts_ms + step_ms, step_ms, det, det_cfg)
    state.prev_low, state.prev_high = nxt.low, nxt.high
    if state.hour_start_ms < 0:  # issue the next hour's interval to be checked
        h = predict(state, max(1, round(detectors.HOUR_MS / step_ms)), ts_ms + step_ms, step_ms, det, det_cfg,
                    hour=True)
        state.hour_start_ms, state.hour_low, state.hour_high = ts_ms + step_ms, h.low, h.high
        state.hour_sum, state.hour_seen = 0.0, 0


def predict(state: ForecastState, horizon_steps: int, ts_ms: int, step_ms: int, det: detectors.DetectorState,
            det_cfg: detectors.DetectorConfig, *, hour: bool | None = None) -> Forecast:
    """Forecast of the total over the ``horizon_steps`` buckets starting at ``ts_ms``. The interval uses
    the next-hour calibration when the horizon is an hour or longer (or ``hour`` says so)."""
    if state.level < 0 or horizon_steps <= 0:
        return Forecast(0.0, 0.0, 0.0)
    phi = min(max(state.ar_num / state.ar_den, 0.0), 0.95) if state.ar_den > 0 else 0.0
    total, carry, level = 0.0, state.resid, state.level
    hour_ms = detectors.HOUR_MS
    i = 0
    while i < horizon_steps:  # the seasonal factor is per hour: one evaluation per hour of the horizon
        t = ts_ms + i * step_ms
        s = detectors.season(det, t, step_ms, det_cfg)
        n = min(-((t - (t // hour_ms + 1) * hour_ms) // step_ms), horizon_steps - i)  # buckets left in t's hour
        i += n
        if phi == 0.0:  # the carry is (signed) zero from the first bucket on: every term is the same
            term = max(level, 0.0) * s
            for _ in range(n):
                total += term
        else:
            for _ in range(n):
                carry *= phi
                total += max(level + carry, 0.0) * s
    long = hour if hour is not None else horizon_steps * step_ms >= detectors.HOUR_MS
    low, high = _interval(total, horizon_steps, _alpha(state), state.scale_hour if long else state.scale_next)
    return Forecast(total, low, high)


def units_ahead(state: ForecastState, det: detectors.DetectorState, as_of_ms: int, bucket_ms: int,
                det_cfg: detectors.DetectorConfig) -> tuple[Forecast, Forecast]:
    """Forecasts for the next 5 minutes and the next hour after ``as_of_ms`` (the features' horizons)."""
    h5, h1 = max(1, round(300_000 / bucket_ms)), max(1, round(detectors.HOUR_MS / bucket_ms))
    return (predict(state, h5, as_of_ms, bucket_ms, det, det_cfg),
            predict(state, h1, as_of_ms, bucket_ms, det, det_cfg))
