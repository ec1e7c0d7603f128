"""Demand forecast per product: pure Python, no I/O, no clock; O(1) per product per bucket.

Separate from the detector's expectation, which is deliberately slow and robust (right for testing
"is this bucket unusual", wrong for "how much will sell next"). With ``z = x / s`` the last bucket's
deseasonalised count, the forecast of the bucket ``i`` ahead (``i = 0``: the next one) is

    i = 0:   (level_next + w * (z' - level_next)) * season * m   w = weight_up or weight_down, learnt
    i >= 1:  (level + phi**(i + 1) * (z - level)) * season       phi: AR(1) of the residuals

where ``z'`` is the last value as the next bucket sees it and ``m`` a learnt median correction (below).

* ``season`` is the detector's hierarchical hour-of-week / hour-of-day / flat factor
  (:func:`streamproc.detectors.season`): long memory, shared, so it costs no state here.
* **Two levels**, exponentially weighted means of deseasonalised counts winsorised tightly (``clip_sd``
  standard deviations, so they follow the median rather than the mean and a one-bucket spike barely moves
  them; while the detector has an incident open the clip widens to ``shift_clip_sd`` so they follow a real
  surge or drop): ``level`` for the hour (half-life ``level_halflife_ms``, 30 min) and ``level_next`` for
  the next bucket (``next_halflife_ms``, 1 h: slower, because the last value brings in the recent past).
* **The next bucket leans on the last value** by a weight learnt online, one after a bucket above
  ``level_next`` and one after a bucket below: sign-sign descent of the absolute error (after each bucket
  the weight moves towards the last value if following it further would have helped, away otherwise, by
  ``blend_step`` times the residual in standard deviations, at most ``blend_cap``), so each settles where
  the errors are balanced, the median, which is what absolute error rewards. On Twitter volumes the weight
  after a rise settles lower than after a fall: lone spikes are common, lone dips are not.
* **What the next bucket takes from the last value** (``z'``): a rise over the bucket before counts only
  half (``rise_discount``: a one-bucket spike is more often gone in the next bucket than not, so the next
  bucket is anchored between the last two), and the last value is carried into the next bucket without
  the seasonal profile's step between their hours (``season_carry`` 0: the profile is one factor per
  hour, so at the hour it jumps where demand moves smoothly, and a last value rescaled by that jump is
  worse than the last value as it came).
* **Median correction** (``m``): after a bucket below, about at, or above ``level_next`` (``median_edges``)
  a multiplicative factor learnt per product by a pinball-loss step in log space (``median_step`` up when
  the outcome was above the forecast, down when below), so each settles where half the outcomes are above:
  the conditional median, which is what absolute error rewards. A sparse product's correction acts by
  ``mu / (mu + median_sparse_units)`` only (its median is 0, and its next-bucket forecast must stay about
  a twelfth of its next hour's).
* **Sparse products** (below about ``sparse_units`` units a bucket) have their weights shrunk by
  ``mu / (mu + sparse_units)`` and their hour level slowed towards the next bucket's as much: a count of 0
  or 1 says little about a rate below one a bucket, and the median forecast of such a product (0) would
  not be an expectation (twelve next-5-minute forecasts should add up to about the next hour's).
* **Persistence over the hour**: the residual from ``level`` follows an AR(1) whose ``phi`` is an
  exponentially weighted regression of each residual on the one before (clamped to [0, 0.95]), so a burst
  that has just started is carried into the next buckets and fades (closed-form sums, one seasonal factor
  per hour of the horizon).
* **80% interval**: counts are negative binomial around the forecast with the forecaster's own
  overdispersion (an exponentially weighted ratio of ``(x - mu)**2 - mu`` to ``mu**2``), so a sum of
  ``h`` buckets has variance ``h*mu + alpha*(h*mu)**2`` (the level error is shared by all buckets of
  the horizon; ``mu`` at least the hour's level). The half-width ``z * sqrt(var)`` is scaled by a factor
  per horizon that is calibrated online to miss 20% of outcomes (a quantile tracker: after a miss it
  grows, after a hit it shrinks), checked every bucket for the next bucket (the interval is recomputed
  from the forecast issued) and once an hour for the next hour.

State: 21 numbers (:class:`ForecastState`, slotted): about 710 bytes in memory (the object and its number
objects), up to about 600 in a JSON snapshot (the bucket before the last, the last seasonal factor and the
three median corrections: 160 and 144 of them).
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
    """Forecaster settings. ``next_*``, ``blend_step``, ``rise_discount``, ``season_carry`` and ``median_step``
    are chosen by leave-one-series-out on the NAB Twitter series (``benchmarks/forecast_eval.py --loo``);
    ``median_sparse_units`` by the check that twelve next-5-minute forecasts of a sparse product add up to
    about its next hour's; ``median_edges`` and ``median_max`` are set by hand, not tuned."""

    level_halflife_ms: int = 30 * 60_000
    """Memory of the hour's level."""
    clip_sd: float = 0.5
    """Observations are clipped to forecast +/- this many standard deviations before updating the level:
    a tight clip makes the level track the median, which is what minimises absolute error on bursty counts."""
    shift_clip_sd: float = 4.0
    """The clip while the detector has an incident open (a surge or drop): the levels then follow the change."""
    next_halflife_ms: int = 3_600_000
    """Memory of the next bucket's level (slower than the hour's: the last value supplies the recent past)."""
    next_clip_sd: float = 0.5
    """Clip of the next bucket's level (as ``clip_sd``)."""
    blend_step: float = 0.03
    """Step of the online weights of the last value in the next-bucket forecast (sign-sign descent)."""
    blend_cap: float = 3.0
    """The step is ``blend_step`` times the last residual in standard deviations, at most this many."""
    sparse_units: float = 1.0
    """Expected units per bucket at which a product counts as half sparse: the weights of its last value are
    shrunk by ``mu / (mu + sparse_units)`` and its hour's level slows towards the next bucket's by as much
    (a count of 0 or 1 says little about a rate below one a bucket)."""
    rise_discount: float = 0.5
    """Share of a rise over the bucket before that the next bucket's forecast discounts."""
    season_carry: float = 0.0
    """Share of the seasonal step from the last bucket to the next that the last value's part of the
    next-bucket forecast follows (the profile is per hour: its step at the hour is sharper than demand's)."""
    median_edges: tuple[float, float] = (0.8, 1.25)
    """The last bucket's ratio to ``level_next`` below the first edge (a fall), up to the second (about
    level) or above it (a rise) picks one of three learnt median corrections of the next bucket."""
    median_step: float = 0.005
    """Log-step of a median correction after each next-bucket outcome (up when the outcome was above the
    forecast, down when below: it settles where half the outcomes are above)."""
    median_sparse_units: float = 4.0
    """The median correction of a product with ``mu`` expected units a bucket acts by ``mu / (mu + this)``
    (its log): a sparse product's median is 0, and its next-bucket forecast must stay about a twelfth of
    its next hour's."""
    median_max: float = 2.0
    """A median correction stays within [1 / median_max, median_max]."""
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
    """Deseasonalised count per bucket (the hour's level); -1 before the first bucket."""
    level_next: float = -1.0
    """Deseasonalised count per bucket (the next bucket's level); -1: not started (copied from ``level``)."""
    weight_up: float = -1.0
    """Weight of the last residual in the next-bucket forecast after a bucket above ``level_next``;
    -1: not learnt yet (phi until then)."""
    weight_down: float = -1.0
    """The same after a bucket below it."""
    disp_num: float = 0.0
    disp_den: float = 0.0
    scale_next: float = 1.0
    """Calibrated multiplier of the next-bucket interval's half-width."""
    scale_hour: float = 1.0
    """Calibrated multiplier of the next-hour interval's half-width."""
    prev_mu: float = -1.0
    """Forecast issued for the bucket now closing (-1: none yet); its interval is recomputed to check it."""
    hour_start_ms: int = -1
    """Start of the hour whose issued interval is being checked (-1: none)."""
    hour_low: float = 0.0
    hour_high: float = 0.0
    hour_sum: float = 0.0
    """Units seen so far in that hour."""
    resid: float = 0.0
    """Last deseasonalised count minus ``level_next`` (units per bucket at season 1)."""
    ar_num: float = 0.0
    """Exponentially weighted sum of residual * previous residual (residuals from ``level``)."""
    ar_den: float = 0.0
    """Exponentially weighted sum of previous residual squared; phi = ar_num / ar_den."""
    z_prev: float = -1.0
    """The deseasonalised count of the bucket before the last (-1: none yet)."""
    season_last: float = -1.0
    """The seasonal factor of the last bucket (-1: none yet)."""
    med_fall: float = 0.0
    """Log median correction of the next bucket after a bucket below ``level_next`` (see ``median_edges``)."""
    med_level: float = 0.0
    """The same after a bucket about at ``level_next``."""
    med_rise: float = 0.0
    """The same after a bucket above it."""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _STATE_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ForecastState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})


_STATE_FIELDS = tuple(f.name for f in fields(ForecastState))
DEFAULT = ForecastConfig()


@dataclass(frozen=True)
class Forecast:
    """Expected total over a horizon with an interval of the configured coverage."""

    expected: float
    low: float
    high: float


def _decay(step_ms: int, halflife_ms: float) -> float:
    return 0.5 ** (step_ms / halflife_ms)


def _alpha(state: ForecastState) -> float:
    if state.disp_den <= 0:
        return 0.1
    prior_w = state.level * state.level  # one bucket's worth of a 0.1 prior
    a = (state.disp_num + 0.1 * prior_w) / (state.disp_den + prior_w)
    return min(max(a, 0.0), 25.0)


def _interval(total: float, spread: float, alpha: float, scale: float) -> tuple[float, float]:
    """Around ``total``, as wide as negative binomial counts of mean ``spread`` vary, times ``scale``."""
    half = Z80 * scale * math.sqrt(spread + alpha * spread * spread)
    return max(total - half, 0.0), total + half


def _calibrate(scale: float, hit: bool, cfg: ForecastConfig) -> float:
    # quantile tracking: E[log-step] = 0 exactly when the miss rate is 1 - coverage
    step = cfg.calibration_step * ((1.0 - cfg.coverage) if hit else -cfg.coverage)
    return min(max(scale * math.exp(-step), 0.05), 20.0)


def _phi(state: ForecastState) -> float:
    return min(max(state.ar_num / state.ar_den, 0.0), 0.95) if state.ar_den > 0 else 0.0


def _median_slot(state: ForecastState, level: float, cfg: ForecastConfig) -> str:
    """Which median correction applies after the last bucket (its ratio to ``level``, see ``median_edges``)."""
    ratio = (level + state.resid) / level if level > 0 else 1.0
    return "med_fall" if ratio < cfg.median_edges[0] else ("med_level" if ratio <= cfg.median_edges[1] else "med_rise")


def _resid_next(state: ForecastState, level: float, s_next: float, cfg: ForecastConfig) -> float:
    """The last bucket's residual from ``level`` as the next bucket sees it: a rise over the bucket before
    counts ``rise_discount`` less (a one-bucket spike is more often gone in the next bucket than a fall),
    and the seasonal step from the last bucket to the next is followed by ``season_carry`` only."""
    z = state.resid + level
    if state.z_prev >= 0 and z > state.z_prev:
        z -= cfg.rise_discount * (z - state.z_prev)
    if cfg.season_carry < 1.0 and state.season_last > 0 and s_next != state.season_last:
        z *= state.season_last / s_next if cfg.season_carry == 0.0 else \
            (state.season_last / s_next) ** (1.0 - cfg.season_carry)
    return z - level


def _next(state: ForecastState, phi: float, s_next: float, cfg: ForecastConfig) -> float:
    """Deseasonalised forecast of the next bucket: ``level_next`` plus a learnt share of the last residual,
    times the learnt median correction for the last bucket's ratio to the level."""
    level = state.level_next if state.level_next >= 0 else state.level  # a snapshot from before it had one
    r = _resid_next(state, level, s_next, cfg)
    w = state.weight_down if r < 0 else state.weight_up
    if w < 0:
        w = phi
    g = level / (level + cfg.sparse_units) if cfg.sparse_units else 1.0
    f = max(level + g * w * r, 0.0)
    m = getattr(state, _median_slot(state, level, cfg))
    if m:  # a sparse product's median is 0: its correction acts less (see ``median_sparse_units``)
        f *= math.exp(m * (level / (level + cfg.median_sparse_units) if cfg.median_sparse_units else 1.0))
    return f


def _learn_median(state: ForecastState, x: float, cfg: ForecastConfig) -> None:
    """Median tracking of the next-bucket forecast per ratio interval: a pinball-loss step in log space."""
    if state.prev_mu <= 0 or x == state.prev_mu or not cfg.median_step:
        return
    slot = _median_slot(state, state.level_next if state.level_next >= 0 else state.level, cfg)
    lim = math.log(cfg.median_max)
    v = getattr(state, slot) + (cfg.median_step if x > state.prev_mu else -cfg.median_step)
    setattr(state, slot, min(max(v, -lim), lim))


def _clipped(x: float, level: float, s: float, alpha: float, clip: float) -> float:
    mu = max(level * s, 1e-3)
    sd = math.sqrt(mu * (1.0 + alpha * mu))
    return min(max(x, mu - clip * sd), mu + clip * sd + 1.0)


def _learn(state: ForecastState, x: float, s: float, alpha: float, cfg: ForecastConfig) -> None:
    """Sign-sign descent of the last forecast's absolute error in the weight it used: towards the last
    value when following it further would have helped, away otherwise; steps in proportion to the residual."""
    r = _resid_next(state, state.level_next, s, cfg)
    if r == 0.0 or x == state.prev_mu:
        return
    up = r > 0
    w = state.weight_up if up else state.weight_down
    if w < 0:
        w = _phi(state)
    mu = max(state.level_next * s, 1e-3)
    step = cfg.blend_step * min(abs(r) * s / math.sqrt(mu * (1.0 + alpha * mu)), cfg.blend_cap)
    w = min(max(w + (step if (x > state.prev_mu) == up else -step), 0.0), 1.0)
    if up:
        state.weight_up = w
    else:
        state.weight_down = w


def update(state: ForecastState, value: float, ts_ms: int, step_ms: int, det: detectors.DetectorState,
           det_cfg: detectors.DetectorConfig, cfg: ForecastConfig) -> None:
    """Consume the count of the bucket starting at ``ts_ms``; ``det`` supplies the seasonal profile."""
    x = max(float(value), 0.0)
    s = max(detectors.season(det, ts_ms, step_ms, det_cfg), 0.05)
    alpha = _alpha(state)
    # check the forecasts issued for this bucket and, at its end, for the hour against what happened
    if state.prev_mu >= 0:
        low, high = _interval(state.prev_mu, max(state.prev_mu, s * state.level), alpha, state.scale_next)
        state.scale_next = _calibrate(state.scale_next, low <= x <= high, cfg)
        _learn(state, x, s, alpha, cfg)
        _learn_median(state, x, cfg)
    if state.hour_start_ms >= 0 and ts_ms >= state.hour_start_ms:
        state.hour_sum += x
        if ts_ms + step_ms >= state.hour_start_ms + detectors.HOUR_MS:
            hit = state.hour_low <= state.hour_sum <= state.hour_high
            state.scale_hour = _calibrate(state.scale_hour, hit, cfg)
            state.hour_start_ms = -1
    z = x / s
    z_last = state.resid + state.level_next if state.level_next >= 0 else -1.0  # the bucket before this one
    if state.level < 0:
        state.level = state.level_next = z
    else:
        if state.level_next < 0:  # a snapshot from before the next bucket's level
            state.level_next = state.level
        r_prev = state.resid + state.level_next - state.level  # the last residual from the hour's level
        mu = max(state.level * s, 1e-3)
        d = _decay(step_ms, cfg.dispersion_halflife_ms)
        state.disp_num = d * state.disp_num + (x - mu) ** 2 - mu
        state.disp_den = d * state.disp_den + mu * mu
        shift = det.firing is not None
        a_hour, a_next = 1.0 - _decay(step_ms, cfg.level_halflife_ms), 1.0 - _decay(step_ms, cfg.next_halflife_ms)
        if cfg.sparse_units:  # a sparse product's hour level is as slow as its next bucket's
            g = mu / (mu + cfg.sparse_units)
            a_hour = g * a_hour + (1.0 - g) * a_next
        xc = _clipped(x, state.level, s, alpha, cfg.shift_clip_sd if shift else cfg.clip_sd)
        state.level += a_hour * (xc / s - state.level)
        xc = _clipped(x, state.level_next, s, alpha, cfg.shift_clip_sd if shift else cfg.next_clip_sd)
        state.level_next += a_next * (xc / s - state.level_next)
        r = z - state.level
        state.ar_num = d * state.ar_num + r * r_prev
        state.ar_den = d * state.ar_den + r_prev * r_prev
    state.z_prev = z_last
    state.season_last = s
    state.resid = z - state.level_next
    state.prev_mu = predict(state, 1, ts_ms + step_ms, step_ms, det, det_cfg, cfg=cfg).expected
    if state.hour_start_ms < 0:  # issue the next hour's interval to be checked
        h = predict(state, max(1, round(detectors.HOUR_MS / step_ms)), ts_ms + step_ms, step_ms, det, det_cfg,
                    hour=True, cfg=cfg)
        state.hour_start_ms, state.hour_low, state.hour_high = ts_ms + step_ms, h.low, h.high
        state.hour_sum = 0.0


def predict(state: ForecastState, horizon_steps: int, ts_ms: int, step_ms: int, det: detectors.DetectorState,
            det_cfg: detectors.DetectorConfig, *, hour: bool | None = None, cfg: ForecastConfig = DEFAULT) -> Forecast:
    """Forecast of the total over the ``horizon_steps`` buckets starting at ``ts_ms``. The interval uses
    the next-hour calibration when the horizon is an hour or longer (or ``hour`` says so)."""
    if state.level < 0 or horizon_steps <= 0:
        return Forecast(0.0, 0.0, 0.0)
    phi = _phi(state)
    level = max(state.level, 0.0)
    s = detectors.season(det, ts_ms, step_ms, det_cfg)
    total, base = s * _next(state, phi, max(s, 0.05), cfg), s * level  # the first bucket; base: all at the level (the spread)
    # bucket i >= 1: level + phi**(i + 1) * r, r the last residual from the level (a snapshot from before the
    # next bucket's level stored that one)
    r = state.resid + state.level_next - state.level if state.level_next >= 0 else state.resid
    hour_ms = detectors.HOUR_MS
    i = 1
    while i < horizon_steps:  # the seasonal factor is per hour: one evaluation per hour of the horizon
        t = ts_ms + i * step_ms
        if t // hour_ms != (t - step_ms) // hour_ms:
            s = detectors.season(det, t, step_ms, det_cfg)
        n = min(-((t - (t // hour_ms + 1) * hour_ms) // step_ms), horizon_steps - i)  # buckets left in t's hour
        geo = phi ** (i + 1) * (1.0 - phi ** n) / (1.0 - phi)  # sum of phi**j, j in (i, i + n]
        total += s * max(n * level + r * geo, 0.0)
        base += s * n * level
        i += n
    long = hour if hour is not None else horizon_steps * step_ms >= detectors.HOUR_MS
    low, high = _interval(total, max(total, base), _alpha(state), state.scale_hour if long else state.scale_next)
    return Forecast(total, low, high)


def units_ahead(state: ForecastState, det: detectors.DetectorState, as_of_ms: int, bucket_ms: int,
                det_cfg: detectors.DetectorConfig) -> tuple[Forecast, Forecast]:
    """Forecasts for the next 5 minutes and the next hour after ``as_of_ms`` (the features' horizons)."""
    h5, h1 = max(1, round(300_000 / bucket_ms)), max(1, round(detectors.HOUR_MS / bucket_ms))
    return (predict(state, h5, as_of_ms, bucket_ms, det, det_cfg),
            predict(state, h1, as_of_ms, bucket_ms, det, det_cfg))
