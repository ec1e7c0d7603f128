"""Demand surge / drop detection over per-bucket counts: pure Python, no I/O, no clock.

One :class:`DetectorState` per product and signal consumes one closed bucket at a time
(:func:`step`) and says what it expected, how anomalous the count is, and whether an incident
starts (``firing``) or ends (``resolved``) on this bucket.

The model:

* **Expected level.** ``expected = level * season(hour_of_week)``. ``level`` is an exponentially
  weighted ratio of sums (counts over seasonal factors) with a half-life in time, so it means the
  same at 1-minute and 30-minute buckets. ``season`` is hierarchical: 24 hour-of-day means give
  ``day = (n*slot_mean + K) / (n*overall_mean + K)`` (``n`` the slot's buckets seen,
  ``K = season_prior_units``), shrunk towards flat; 168 hour-of-week means give
  ``day + g * (week_mean / overall_mean - day)``, shrunk towards the hour-of-day factor by
  ``g = u / (u + week_prior_units) * w / (w + week_prior_weeks)`` with ``u`` the units and ``w`` the
  weeks of that hour-of-week slot seen (the buckets of one Saturday evening are one draw of "Saturday
  evening", not twelve). A sparse or new product keeps a flat profile, then a daily one, and learns its
  weekly rhythm (Saturday nights, Monday mornings) only as its own history outweighs the priors. The
  weekly means are updated only outside incidents, with observations clipped at ``week_clip_sd``.
* **Honest test for counts.** Counts are negative binomial around the expectation: variance
  ``mu + alpha * mu**2``, with ``alpha`` (overdispersion) estimated online as a ratio of
  exponentially weighted sums of ``(x - mu)**2 - mu`` and ``mu**2``. Two one-sided CUSUMs
  accumulate the NB log-likelihood ratio of "the rate is ``surge_ratio`` times the expectation"
  (or ``drop_ratio`` times) against "the rate is as expected". A CUSUM sums evidence over as many
  buckets as it takes, so a sparse product shows a surge after a few buckets and a busy one after
  one, and a silent product that normally sells builds up drop evidence bucket by bucket.
* **Minimum volume.** A surge needs ``min_surge_units`` observed during the evidence run; a drop
  needs ``min_drop_expected_units`` expected (and missing) during the run.
* **Long-run floors.** The surge test's expectation is at least ``surge_long_run`` times the hour of
  day's long-run mean, and the drop test's at most ``drop_long_run`` times it: traffic coming back
  after a dip (a holiday, an outage) is not a surge, and a product that is always quiet at this hour
  (a sparse product at night, while its profile is still flat) is not dropping. Once an hour of the week
  has been seen in an earlier week, the floor is the higher and the cap the lower of the hour of day's
  and the hour of week's long-run means (``surge_long_run_week``, ``drop_long_run_week``), the latter
  shrunk towards the former until its units outweigh ``week_prior_units``: a Saturday night that is
  always busier than the average night is not a surge, a Monday dawn that is always quieter is not a
  drop. Unlike the profile, the floors do not wait for ``week_prior_weeks``: they can only hold an alert
  back, so they may trust a weekly rhythm after a few weeks rather than months.
* **Calibration to the series' own alarm rate.** Every incident adds one to an exponentially decaying
  ``alarm_load`` (half-life ``alarm_halflife_ms``); the CUSUM threshold is
  ``threshold_nats * (1 + alarm_gain * alarm_load)``, so a series whose bursts are routine (it has
  fired recently) needs more evidence than a calm one, and the score (statistic over twice that
  threshold) means the same on both.
* **Incident lifecycle.** The condition must hold ``pending_steps`` buckets before ``firing``; the
  incident stays open until the condition has been clear ``keep_firing_steps`` buckets, then
  ``resolved``. One incident at a time per series, and none during ``warmup_ms`` after the first
  bucket or within ``cooldown_ms`` of the previous incident's start.

Observations are winsorised (at ``clip_sd`` NB standard deviations) before they update the level
and profile, so a surge does not teach the model that surges are normal; the overdispersion sees
them unclipped, so a bursty series earns a wider tail (and fewer alerts) than a calm one.
Defaults were chosen by leave-one-series-out on NAB's five public Twitter series
(``benchmarks/nab_eval.py``: settings chosen on four series, scored on the fifth).
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["DetectorConfig", "DetectorState", "Decision", "new_state", "step", "forecast", "season", "nb_llr"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SLOTS = 24
WEEK_SLOTS = 168
_MU_FLOOR = 1e-3  # expected count per bucket never goes below this (keeps the test finite)


@dataclass(frozen=True)
class DetectorConfig:
    """Detector settings. The defaults are the shipped, frozen settings (see the module docstring)."""

    level_halflife_ms: int = 4 * HOUR_MS
    """Memory of the adaptive level (deseasonalised rate)."""
    season_halflife_ms: int = 7 * DAY_MS
    """Memory of the hour-of-day profile."""
    season_prior_units: float = 20.0
    """Pseudo-units that pull each hour-of-day factor towards 1 until the product's history outweighs them."""
    week_halflife_ms: int = 28 * DAY_MS
    """Memory of the hour-of-week profile."""
    week_prior_units: float = 40.0
    """Pseudo-units that pull each hour-of-week factor towards the hour-of-day factor."""
    week_prior_weeks: float = 16.0
    """Pseudo-weeks that pull each hour-of-week factor towards the hour-of-day factor."""
    week_clip_sd: float = 1.0
    """Observations are clipped to expected +/- this many standard deviations before updating the
    hour-of-week profile (12 buckets a week at 5 minutes: one burst would otherwise shape it for weeks)."""
    dispersion_halflife_ms: int = 3 * DAY_MS
    """Memory of the overdispersion estimate."""
    alpha_prior: float = 0.1
    """Overdispersion (NB ``alpha``; variance ``mu + alpha * mu**2``) assumed before data says otherwise."""
    alpha_max: float = 25.0
    """Upper bound on the estimated overdispersion."""
    surge_ratio: float = 3.0
    """Alternative rate multiple the surge CUSUM looks for."""
    drop_ratio: float = 0.25
    """Alternative rate multiple the drop CUSUM looks for."""
    threshold_nats: float = 12.0
    """CUSUM decision threshold (log-likelihood ratio, natural log). The statistic is capped at twice this."""
    min_surge_units: float = 5.0
    """A surge needs at least this many units observed during its evidence run."""
    min_drop_expected_units: float = 10.0
    """A drop needs at least this many units expected during its evidence run."""
    surge_long_run: float = 1.0
    """The surge test's expectation is at least this share of the hour-of-day's long-run mean (0 = off)."""
    drop_long_run: float = 1.0
    """The drop test's expectation is at most this multiple of the hour-of-day's long-run mean (0 = off)."""
    surge_long_run_week: bool = True
    """The surge test's long-run floor also holds against this hour of the week's long-run mean (once seen):
    a Saturday night busier than the hour-of-day mean is not a surge."""
    drop_long_run_week: bool = True
    """The drop test's long-run cap also holds against this hour of the week's long-run mean (once seen):
    a Monday dawn quieter than the hour-of-day mean is not a drop."""
    alarm_gain: float = 0.0
    """Relative rise of the threshold per recent incident (see the module docstring); 0 = fixed threshold."""
    alarm_halflife_ms: int = 7 * DAY_MS
    """Memory of the alarm load that raises the threshold."""
    pending_steps: int = 1
    """Buckets the condition must hold before an incident fires."""
    keep_firing_steps: int = 3
    """Buckets the condition must be clear before a firing incident resolves."""
    cooldown_ms: int = DAY_MS
    """No new incident within this long of the previous incident's start."""
    warmup_ms: int = DAY_MS
    """No evidence is accumulated (so no incident) within this long of the series' first bucket."""
    clip_sd: float = 4.0
    """Observations are clipped to expected + this many standard deviations before updating the baseline."""
    critical_ratio: float = 5.0
    """Severity is critical when observed/expected over the run is >= this (surge) or <= 1/this (drop)."""

    def __post_init__(self) -> None:
        positive = ("level_halflife_ms", "season_halflife_ms", "week_halflife_ms", "dispersion_halflife_ms",
                    "alarm_halflife_ms", "threshold_nats",
                    "critical_ratio", "clip_sd", "week_clip_sd")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"DetectorConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.surge_ratio > 1.0:
            raise ValueError(f"DetectorConfig.surge_ratio must be > 1, got {self.surge_ratio!r}")
        if not 0.0 < self.drop_ratio < 1.0:
            raise ValueError(f"DetectorConfig.drop_ratio must be in (0, 1), got {self.drop_ratio!r}")
        if self.pending_steps < 1 or self.keep_firing_steps < 1:
            raise ValueError("DetectorConfig.pending_steps and keep_firing_steps must be >= 1")
        for name in ("alpha_prior", "alpha_max", "season_prior_units", "week_prior_units", "week_prior_weeks",
                     "surge_long_run", "drop_long_run", "alarm_gain", "min_surge_units",
                     "min_drop_expected_units", "cooldown_ms", "warmup_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"DetectorConfig.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(slots=True)
class DetectorState:
    """Everything a series' detector remembers (about 20 numbers, 24 doubles and 168 float32s, ~1.5 KB in
    the heap); mutated in place by :func:`step`."""

    steps: int = 0
    """Buckets consumed."""
    first_ts_ms: int | None = None
    """Start of the first bucket consumed."""
    slot_means: array = field(default_factory=lambda: array("d", [-1.0] * SLOTS))
    """Exponentially weighted mean count per bucket in each UTC hour of the day; -1 = not seen yet."""
    week_means: array = field(default_factory=lambda: array("f", [-1.0] * WEEK_SLOTS))
    """Exponentially weighted mean count per bucket in each UTC hour of the week (float32); -1 = not seen yet."""
    alarm_load: float = 0.0
    """Exponentially decaying count of recent incidents (raises the threshold)."""
    level_num: float = 0.0
    """Exponentially weighted sum of (clipped) counts."""
    level_den: float = 0.0
    """Exponentially weighted sum of the seasonal factors of those buckets; level = num / den."""
    disp_num: float = 0.0
    """Exponentially weighted sum of (x - mu)**2 - mu."""
    disp_den: float = 0.0
    """Exponentially weighted sum of mu**2; alpha = num / den."""
    up_llr: float = 0.0
    """Surge CUSUM statistic (nats)."""
    up_obs: float = 0.0
    """Units observed since the surge CUSUM last left zero."""
    up_exp: float = 0.0
    """Units expected over the same run."""
    down_llr: float = 0.0
    """Drop CUSUM statistic (nats)."""
    down_obs: float = 0.0
    """Units observed since the drop CUSUM last left zero."""
    down_exp: float = 0.0
    """Units expected over the same run."""
    pending: str | None = None
    """Direction whose condition has held ``pending_count`` buckets without firing yet."""
    pending_count: int = 0
    firing: str | None = None
    """Direction of the open incident ("surge" | "drop"), None when no incident is open."""
    clear_count: int = 0
    """Buckets in a row with the open incident's condition clear."""
    severity: str = "warning"
    """Severity of the open (or last) incident."""
    last_fired_ms: int | None = None
    """Bucket start of the last ``firing`` transition (for the cooldown)."""
    overall: float | None = field(default=None, repr=False, compare=False)
    """Mean of the seen hour-of-day means (-1 if none), derived from ``slot_means`` and not stored; None until
    computed, reset by :func:`step` when a mean changes."""
    season_ts: int | None = field(default=None, repr=False, compare=False)
    """Bucket start of the last factor :func:`season` computed (None: none since the last step), and the factor:
    a close asks for the next bucket's factor several times (forecast, features) with the state unchanged."""
    season_value: float = field(default=1.0, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (plain floats, ints, strings, None and one list). Floats are kept
        exact (orjson writes the shortest repr that reads back to the same float), so a restored detector
        continues exactly where it stopped. Hand-written: ``dataclasses.asdict`` deep-copies and was the
        largest cost of storing product state."""
        d = {name: getattr(self, name) for name in _STORED}
        d["slot_means"] = list(self.slot_means)
        week = self.week_means
        if sys.byteorder == "big":  # the snapshot is little-endian float32 everywhere
            week = array("f", week)
            week.byteswap()
        d["week_means"] = base64.b64encode(week.tobytes()).decode("ascii")  # 896 characters, exact
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorState:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing keys take their defaults."""
        known = set(_STORED)
        kwargs = {k: v for k, v in d.items() if k in known}
        if "slot_means" in kwargs:
            means = [float(m) for m in kwargs["slot_means"]]
            kwargs["slot_means"] = array("d", means if len(means) == SLOTS else [-1.0] * SLOTS)
        week = array("f")
        if isinstance(kwargs.get("week_means"), str):
            week.frombytes(base64.b64decode(kwargs["week_means"]))
            if sys.byteorder == "big":
                week.byteswap()
        kwargs["week_means"] = week if len(week) == WEEK_SLOTS else array("f", [-1.0] * WEEK_SLOTS)
        return cls(**kwargs)


_STORED = tuple(f.name for f in fields(DetectorState) if f.name not in ("overall", "season_ts", "season_value"))


@dataclass(frozen=True)
class Decision:
    """What the detector concluded about one bucket."""

    expected: float
    """Expected count for this bucket, from the history before it."""
    score: float
    """Anomaly score in [0, 1] (surge or drop); >= 0.5 means the CUSUM is past its threshold."""
    direction: str | None
    """"surge" | "drop" | None: the condition on this bucket (before pending / warm-up / cooldown)."""
    transition: str | None
    """"firing" | "resolved" | None: incident lifecycle event emitted on this bucket."""
    kind: str | None
    """"demand_surge" | "demand_drop": the incident this transition (or open incident) belongs to."""
    severity: str
    """"warning" | "critical"."""


def new_state(cfg: DetectorConfig) -> DetectorState:
    """A fresh state for a series with no history (``cfg`` is accepted for interface stability)."""
    del cfg
    return DetectorState()


def _decay(step_ms: int, halflife_ms: float) -> float:
    """Weight kept by an exponentially weighted sum after one bucket of ``step_ms``."""
    return 0.5 ** (step_ms / halflife_ms)


def _slot(ts_ms: int) -> int:
    return (ts_ms // HOUR_MS) % SLOTS


def _visits(state: DetectorState, slot: int, ts_ms: int, step_ms: int, period: int = SLOTS) -> float:
    """Buckets of hour ``slot`` (of a ``period``-hour cycle) consumed before the bucket at ``ts_ms``
    (buckets are contiguous)."""
    if state.first_ts_ms is None:
        return 0.0
    h_first, h_now = state.first_ts_ms // HOUR_MS, ts_ms // HOUR_MS
    whole_hours = (h_now - slot - 1) // period - (h_first - slot - 1) // period  # hours H in [h_first, h_now)
    n = whole_hours * HOUR_MS / step_ms
    if slot == h_now % period:
        n += (ts_ms - max(state.first_ts_ms, h_now * HOUR_MS)) // step_ms
    return max(n, 0.0)


def _season(state: DetectorState, slot: int, ts_ms: int, step_ms: int, cfg: DetectorConfig) -> float:
    """Hour-of-week factor (about 1 on average): the hour-of-day factor shrunk towards 1 while the
    slot's history is thin, and the hour-of-week mean shrunk towards that while its own is thin."""
    m = state.slot_means[slot]
    if m < 0:
        return 1.0
    overall = state.overall
    if overall is None:
        seen = [v for v in state.slot_means if v >= 0]
        overall = state.overall = sum(seen) / len(seen)
    memory = 1.0 / (1.0 - _decay(step_ms, cfg.season_halflife_ms / SLOTS))
    n = min(_visits(state, slot, ts_ms, step_ms), memory)
    k = cfg.season_prior_units
    day = (n * m + k) / (n * overall + k) if n * overall + k > 0 else 1.0
    wslot = (ts_ms // HOUR_MS) % WEEK_SLOTS
    mw = state.week_means[wslot]
    kw = cfg.week_prior_units
    if mw < 0:
        return day
    memory_w = 1.0 / (1.0 - _decay(step_ms, cfg.week_halflife_ms / WEEK_SLOTS))
    nw = min(_visits(state, wslot, ts_ms, step_ms, WEEK_SLOTS), memory_w)
    # trust grows with units seen (sparse products) and with weeks seen: the buckets of one Saturday
    # evening are one draw of "Saturday evening", not twelve
    weeks = nw * step_ms / HOUR_MS
    g = (nw * overall / (nw * overall + kw)) * (weeks / (weeks + cfg.week_prior_weeks)) if overall > 0 else 0.0
    return day + g * (mw / overall - day) if overall > 0 else day


def _long_run_week(state: DetectorState, m_slot: float, ts_ms: int, step_ms: int, cfg: DetectorConfig) -> float:
    """This hour of the week's long-run mean count, shrunk towards the hour of day's (``m_slot``) until the
    units seen in it outweigh ``week_prior_units``, as in the profile, but without its pseudo-weeks: a floor
    can only hold an alert back, so it may trust a weekly rhythm after a few weeks rather than months;
    -1 while either mean is unseen."""
    h_now = ts_ms // HOUR_MS
    wslot = h_now % WEEK_SLOTS
    mw = state.week_means[wslot]
    if mw < 0 or m_slot < 0 or state.first_ts_ms is None:
        return -1.0
    # only earlier weeks count: within its first hour the mean is of the very buckets under test
    h_first = state.first_ts_ms // HOUR_MS
    weeks = (h_now - wslot - 1) // WEEK_SLOTS - (h_first - wslot - 1) // WEEK_SLOTS  # this hour of the week, before now
    if weeks <= 0:
        return -1.0
    memory_w = 1.0 / (1.0 - _decay(step_ms, cfg.week_halflife_ms / WEEK_SLOTS))
    u = min(weeks * HOUR_MS / step_ms, memory_w) * mw
    return m_slot + u / (u + cfg.week_prior_units) * (mw - m_slot) if u > 0 else m_slot


def _level(state: DetectorState) -> float:
    return state.level_num / state.level_den if state.level_den > 0 else 0.0


def _alpha(state: DetectorState, cfg: DetectorConfig) -> float:
    if state.disp_den <= 0:
        return cfg.alpha_prior
    # a prior worth one bucket at the current scale keeps the estimate sane while data is thin
    prior_w = state.disp_den / max(state.steps, 1)
    a = (state.disp_num + cfg.alpha_prior * prior_w) / (state.disp_den + prior_w)
    return min(max(a, 0.0), cfg.alpha_max)


def nb_llr(x: float, mu: float, ratio: float, alpha: float) -> float:
    """Log-likelihood ratio of count ``x`` under NB(mean ``ratio * mu``) vs NB(mean ``mu``).

    Both have the same size ``k = 1 / alpha``; ``alpha == 0`` is the Poisson limit."""
    if alpha < 1e-9:
        return x * math.log(ratio) - (ratio - 1.0) * mu
    k = 1.0 / alpha
    slope = math.log(ratio) + math.log1p(mu / k) - math.log1p(ratio * mu / k)
    return x * slope - k * (math.log1p(ratio * mu / k) - math.log1p(mu / k))


def _kind(direction: str | None) -> str | None:
    return None if direction is None else ("demand_surge" if direction == "surge" else "demand_drop")


def step(state: DetectorState, value: float, ts_ms: int, step_ms: int, cfg: DetectorConfig) -> Decision:
    """Consume the count ``value`` of the bucket starting at ``ts_ms`` (length ``step_ms``).

    Updates ``state`` in place and returns the :class:`Decision` for this bucket."""
    x = max(float(value), 0.0)
    if state.first_ts_ms is None:
        state.first_ts_ms = ts_ms
    slot = _slot(ts_ms)
    s = _season(state, slot, ts_ms, step_ms, cfg)
    level = _level(state)
    mu = max(level * s, _MU_FLOOR)
    alpha = _alpha(state, cfg)
    warm = state.steps > 0 and ts_ms - state.first_ts_ms >= cfg.warmup_ms

    # -- test: two one-sided CUSUMs on the NB log-likelihood ratio -------------------------------
    if state.alarm_load > 0:
        state.alarm_load *= _decay(step_ms, cfg.alarm_halflife_ms)
    threshold = cfg.threshold_nats * (1.0 + cfg.alarm_gain * state.alarm_load)
    cap = 2.0 * threshold
    mu_down = mu
    if warm:  # before that the profile is still being learnt: evidence would be about the model
        # a surge must be unusual against the recent level and against this hour's long-run mean, so
        # that traffic coming back after a dip (a holiday, an outage) is not a surge
        m_slot = state.slot_means[slot]
        m_week = _long_run_week(state, m_slot, ts_ms, step_ms, cfg)
        m_high = max(m_slot, m_week) if cfg.surge_long_run_week else m_slot
        m_low = m_week if cfg.drop_long_run_week and 0.0 <= m_week < m_slot else m_slot
        long_run = m_high * cfg.surge_long_run if cfg.surge_long_run > 0 else 0.0
        mu_up = max(mu, long_run)
        state.up_llr = min(max(state.up_llr + nb_llr(x, mu_up, cfg.surge_ratio, alpha), 0.0), cap)
        # a drop must be unusual against the recent level and against this hour's long-run mean: a
        # product that is always quiet at this hour (a sparse product at night) is not dropping
        mu_down = min(mu, max(m_low * cfg.drop_long_run, _MU_FLOOR)) if cfg.drop_long_run > 0 and m_slot >= 0 else mu
        state.down_llr = min(max(state.down_llr + nb_llr(x, mu_down, cfg.drop_ratio, alpha), 0.0), cap)
    state.up_obs, state.up_exp = (state.up_obs + x, state.up_exp + mu) if state.up_llr > 0 else (0.0, 0.0)
    state.down_obs, state.down_exp = (state.down_obs + x, state.down_exp + mu_down) if state.down_llr > 0 else (0.0, 0.0)
    surge = state.up_llr >= threshold and state.up_obs >= cfg.min_surge_units
    drop = state.down_llr >= threshold and state.down_exp >= cfg.min_drop_expected_units
    direction = "surge" if surge and (not drop or state.up_llr >= state.down_llr) else ("drop" if drop else None)
    score = min(max(state.up_llr, state.down_llr) / cap, 1.0)

    # -- incident lifecycle ------------------------------------------------------------------------
    transition: str | None = None
    if state.firing is not None:
        kind = _kind(state.firing)
        state.clear_count = 0 if direction == state.firing else state.clear_count + 1
        if state.clear_count >= cfg.keep_firing_steps:
            transition, state.firing, state.clear_count = "resolved", None, 0
    else:
        kind = None
        cooling = state.last_fired_ms is not None and ts_ms - state.last_fired_ms < cfg.cooldown_ms
        if direction is None or not warm or cooling:
            state.pending, state.pending_count = None, 0
        else:
            state.pending_count = state.pending_count + 1 if state.pending == direction else 1
            state.pending = direction
            if state.pending_count >= cfg.pending_steps:
                transition, state.firing, kind = "firing", direction, _kind(direction)
                state.pending, state.pending_count, state.clear_count = None, 0, 0
                state.last_fired_ms = ts_ms
                state.alarm_load += 1.0
                obs, exp = (state.up_obs, state.up_exp) if direction == "surge" else (state.down_obs, state.down_exp)
                ratio = obs / max(exp, _MU_FLOOR)
                critical = ratio >= cfg.critical_ratio if direction == "surge" else ratio <= 1.0 / cfg.critical_ratio
                state.severity = "critical" if critical else "warning"

    # -- learn: winsorised update of level, season and dispersion ----------------------------------
    sd = math.sqrt(mu * (1.0 + alpha * mu))
    xc = min(x, mu + cfg.clip_sd * sd + 1.0) if state.steps > 0 else x
    d_level = _decay(step_ms, cfg.level_halflife_ms)
    state.level_num = d_level * state.level_num + xc
    state.level_den = d_level * state.level_den + s
    m = state.slot_means[slot]
    rate = max(1.0 / (_visits(state, slot, ts_ms, step_ms) + 1.0), 1.0 - _decay(step_ms, cfg.season_halflife_ms / SLOTS))
    state.slot_means[slot] = xc if m < 0 else m + rate * (xc - m)
    state.overall = None
    if state.firing is None:  # an open incident must not teach the weekly profile (12 buckets a week) it is normal
        wslot = (ts_ms // HOUR_MS) % WEEK_SLOTS
        mw = state.week_means[wslot]
        rate_w = max(1.0 / (_visits(state, wslot, ts_ms, step_ms, WEEK_SLOTS) + 1.0),
                     1.0 - _decay(step_ms, cfg.week_halflife_ms / WEEK_SLOTS))
        xw = min(max(x, mu - cfg.week_clip_sd * sd), mu + cfg.week_clip_sd * sd + 1.0)
        state.week_means[wslot] = xw if mw < 0 else mw + rate_w * (xw - mw)
    if state.steps > 0:
        d_disp = _decay(step_ms, cfg.dispersion_halflife_ms)
        state.disp_num = d_disp * state.disp_num + (x - mu) ** 2 - mu  # unclipped: tails are real
        state.disp_den = d_disp * state.disp_den + mu * mu
    state.steps += 1
    state.season_ts = None  # the profile changed
    return Decision(expected=mu, score=score, direction=direction, transition=transition,
                    kind=kind, severity=state.severity)


def forecast(state: DetectorState, horizon_steps: int, ts_ms: int, step_ms: int, cfg: DetectorConfig) -> float:
    """Expected total count over the ``horizon_steps`` buckets starting at ``ts_ms``."""
    level = _level(state)
    total = 0.0
    if level == 0.0:  # the sum below is 0.0 too (seasonal factors are finite): skip computing them
        return total
    for i in range(max(horizon_steps, 0)):
        t = ts_ms + i * step_ms
        total += level * _season(state, _slot(t), t, step_ms, cfg)
    return total


def season(state: DetectorState, ts_ms: int, step_ms: int, cfg: DetectorConfig) -> float:
    """The seasonal factor (about 1 on average) the detector uses for the bucket at ``ts_ms`` (the last one is
    remembered until the next :func:`step`: one ``step_ms`` and ``cfg`` per state)."""
    if state.season_ts == ts_ms:
        return state.season_value
    v = state.season_value = _season(state, _slot(ts_ms), ts_ms, step_ms, cfg)
    state.season_ts = ts_ms
    return v
