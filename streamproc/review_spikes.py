"""``negative_review_spike``: a product's share of negative reviews, recently, against its own baseline.

Pure logic over the closed buckets the engine keeps (``ProductState.minutes``, counters ``SCORED`` and
``NEGATIVE``), called once per closed bucket from :meth:`DemandEngine._close`.

* **Baseline.** An exponentially weighted count of scored and of negative reviews (half-life
  ``baseline_halflife_ms``, three days) over the buckets that have left the longest window, plus
  ``prior_reviews`` pseudo-reviews at ``prior_share``: a new product starts from the shop-wide prior and
  moves to its own share as its reviews outweigh the prior. The recent window never feeds its own
  baseline, so a spike does not hide itself, and the baseline stays frozen while an incident fires, so a
  lasting problem does not become the norm and resolve itself. (The prior is a setting rather than learnt from the
  category: category state is per worker and in memory, and the alerts must not depend on which worker
  saw what, nor on a restart.)
* **Honest at low counts.** The window's share is judged by its Wilson lower confidence bound (``z``,
  one-sided 99.9% by default), not by the raw share: 3 negative of 4 has a bound of 0.17 (not a spike
  over a 0.15 baseline + 0.15 margin), 30 of 40 has 0.50 (a spike). It fires when the bound is at least
  ``baseline + fire_margin`` and at least ``min_negative`` reviews are negative. More reviews at the
  usual share only tighten the bound around the usual share: volume alone never fires.
* **Windows.** The test runs over several trailing windows (5, 15 and 60 minutes by default): a busy
  product shows a spike within minutes in the short one before normal reviews dilute it, a sparse one
  collects enough reviews in the long one. The incident remembers the window it fired on.
* **Hysteresis.** A firing incident resolves once every window's bound has been below
  ``baseline + resolve_margin`` (a lower bar) for ``keep_firing_steps`` buckets in a row: after a spike
  that is when it has left the longest window.
* **Evidence.** Per bucket the engine keeps the ``evidence_k`` most negative reviews labelled negative
  (id, P(negative), the first 120 characters); the alert carries the most negative of its window.

``score`` is 0.5 at the firing bar and 1.0 at twice the margin: ``0.5 * (bound - baseline) / fire_margin``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import alerts as alerts_mod

if TYPE_CHECKING:
    from .demand import Output, ProductState

__all__ = ["ReviewSpikeConfig", "ReviewSpikeState", "wilson_lower", "baseline_share", "Verdict", "judge",
           "add_evidence", "on_close", "SNIPPET_CHARS"]

MIN_MS = 60_000
HOUR_MS = 60 * MIN_MS
DAY_MS = 24 * HOUR_MS
SNIPPET_CHARS = 120
_NEGATIVE, _SCORED = 6, 8  # counter slots of a bucket (demand.NEGATIVE, demand.SCORED)


@dataclass(frozen=True)
class ReviewSpikeConfig:
    """Settings of the negative-review spike test (``STREAMPROC_REVIEW_SPIKE_<FIELD>``)."""

    windows_ms: tuple[int, ...] = (5 * MIN_MS, 15 * MIN_MS, HOUR_MS)
    """Trailing windows (event time) the test runs over; each at most an hour (the closed buckets kept)."""
    baseline_halflife_ms: int = 3 * DAY_MS
    """Memory of the product's baseline share."""
    prior_share: float = 0.15
    """Negative share a product is assumed to have before its own reviews say otherwise."""
    prior_reviews: float = 20.0
    """Weight of that prior, in reviews."""
    z: float = 3.09
    """Wilson bound's z (3.09: one-sided 99.9%; 2.33 gave a product at its usual share about one false
    alert every two or three days in simulation, 3.09 about one a month at worst)."""
    fire_margin: float = 0.15
    """Fire when the window's lower bound is at least baseline + this."""
    resolve_margin: float = 0.05
    """Resolve when the lower bound is below baseline + this (for keep_firing_steps buckets)."""
    min_negative: int = 5
    """At least this many negative reviews in the window to fire."""
    keep_firing_steps: int = 3
    critical_share: float = 0.5
    """Severity is critical when the lower bound is at least this."""
    evidence_k: int = 5
    """Reviews kept per bucket and cited per alert."""

    def __post_init__(self) -> None:
        if not self.windows_ms or any(not (0 < w <= HOUR_MS) for w in self.windows_ms):
            raise ValueError(f"windows_ms must be one or more durations in (0, 1 h], got {self.windows_ms!r}")
        for name in ("prior_share", "fire_margin", "resolve_margin", "critical_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.resolve_margin > self.fire_margin:
            raise ValueError(f"resolve_margin ({self.resolve_margin}) must not exceed fire_margin ({self.fire_margin})")
        if not self.baseline_halflife_ms > 0 or not self.z > 0 or self.prior_reviews < 0:
            raise ValueError("baseline_halflife_ms and z must be > 0, prior_reviews >= 0")
        if self.min_negative < 1 or self.keep_firing_steps < 1 or not 1 <= self.evidence_k <= 50:
            raise ValueError("min_negative and keep_firing_steps must be >= 1, evidence_k in 1..50")

    @property
    def longest_ms(self) -> int:
        return max(self.windows_ms)


@dataclass
class ReviewSpikeState:
    """What one product's test remembers (persisted with the product)."""

    base_n: float = 0.0
    """Exponentially weighted count of scored reviews that left the longest window."""
    base_neg: float = 0.0
    """Same, negative ones."""
    window_ms: int | None = None
    """While firing: the window the incident fired on."""
    clear_steps: int = 0
    """While firing: buckets in a row below the resolve bar."""

    def to_dict(self) -> list[Any]:
        return [self.base_n, self.base_neg, self.window_ms, self.clear_steps]

    @classmethod
    def from_dict(cls, d: list[Any] | None) -> ReviewSpikeState:
        return cls() if not d else cls(float(d[0]), float(d[1]), d[2], int(d[3]))


def wilson_lower(k: float, n: float, z: float) -> float:
    """Lower end of the Wilson score interval for ``k`` successes in ``n`` trials (0 when ``n`` is 0)."""
    if n <= 0:
        return 0.0
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    return max(0.0, (centre - half) / (1 + z2 / n))


def baseline_share(st: ReviewSpikeState, cfg: ReviewSpikeConfig) -> float:
    """The product's usual negative share: its own history, shrunk towards the prior."""
    return (st.base_neg + cfg.prior_reviews * cfg.prior_share) / (st.base_n + cfg.prior_reviews) \
        if st.base_n + cfg.prior_reviews > 0 else cfg.prior_share


@dataclass(frozen=True)
class Verdict:
    """The test on one window."""

    window_ms: int
    n: float
    k: float
    bound: float
    score: float
    spike: bool


def judge(windows: list[tuple[int, float, float]], baseline: float, cfg: ReviewSpikeConfig) -> list[Verdict]:
    """The test on each ``(window_ms, scored, negative)``."""
    out = []
    for w, n, k in windows:
        bound = wilson_lower(k, n, cfg.z)
        score = min(1.0, max(0.0, 0.5 * (bound - baseline) / cfg.fire_margin)) if cfg.fire_margin > 0 else \
            float(bound >= baseline)
        out.append(Verdict(w, n, k, bound, score, k >= cfg.min_negative and bound >= baseline + cfg.fire_margin))
    return out


def add_evidence(top: list[list[Any]], negative: float, review_id: str, text: str, k: int) -> None:
    """Keep the ``k`` most negative reviews of a bucket: ``[P(negative), review_id, snippet]``, most
    negative first (ties by id, so the choice does not depend on arrival order)."""
    top.append([round(negative, 6), review_id, text[:SNIPPET_CHARS]])
    top.sort(key=lambda e: (-e[0], e[1]))
    del top[k:]


def _window_counts(p: ProductState, end_ms: int, cfg: ReviewSpikeConfig) -> list[tuple[int, float, float]]:
    """Scored and negative reviews per trailing window, from the running totals of ``p.minutes`` (whole
    numbers, so exact): a short window adds its newest rows, a long one takes the oldest off the total."""
    rows = p.minutes
    out = []
    for w in cfg.windows_ms:
        since = end_ms - w
        n = k = 0.0
        if 2 * w <= HOUR_MS:
            for start in reversed(rows):
                if start < since:
                    break
                c = rows[start]
                n += c[_SCORED]
                k += c[_NEGATIVE]
        else:
            n, k = p.m_sum[_SCORED], p.m_sum[_NEGATIVE]
            for start, c in rows.items():
                if start >= since:
                    break
                n -= c[_SCORED]
                k -= c[_NEGATIVE]
        out.append((w, n, k))
    return out


def _evidence(p: ProductState, start_ms: int, end_ms: int, k: int) -> dict[str, list[str]]:
    rows = [e for b, top in p.neg_top.items() if start_ms <= b < end_ms for e in top]
    rows.sort(key=lambda e: (-e[0], e[1]))
    return {"review_ids": [e[1] for e in rows[:k]], "snippets": [e[2] for e in rows[:k]]}


def _describe(v: Verdict, baseline: float, start_ms: int) -> str:
    return (f"{v.k:g} of {v.n:g} reviews negative ({v.k / v.n:.0%}) in the {v.window_ms / MIN_MS:g} min window "
            f"starting {alerts_mod.event_time_text(start_ms)}, against a usual {baseline:.0%} for this product "
            f"(lower confidence bound of the share {v.bound:.0%}); score {v.score:.3f}.") if v.n else \
        f"no scored reviews in the {v.window_ms / MIN_MS:g} min window starting {alerts_mod.event_time_text(start_ms)}."


@functools.cache
def _decay(size_ms: int, halflife_ms: int) -> float:
    return 0.5 ** (size_ms / halflife_ms)


def on_close(p: ProductState, b: int, size: int, cfg: ReviewSpikeConfig, out: list[Output]) -> None:
    """Bucket ``b`` of ``p`` has closed (``p.minutes[b]`` holds it if it had activity): feed the baseline
    with the bucket that left the longest window, run the test, emit firing/resolved, prune evidence.
    Call before the engine prunes ``p.minutes``."""
    from .demand import Output

    st = p.review
    if not (st.base_n or st.base_neg or p.neg_top or st.window_ms or p.m_sum[_SCORED]):
        return  # never reviewed (or all forgotten): every step below would leave the state as it is
    end = b + size
    keep = _decay(size, cfg.baseline_halflife_ms)
    st.base_n *= keep
    st.base_neg *= keep
    gone = p.minutes.get(end - cfg.longest_ms - size)
    if gone is not None and st.window_ms is None:  # frozen while firing: an incident does not become the norm
        st.base_n += gone[_SCORED]
        st.base_neg += gone[_NEGATIVE]
    if p.neg_top:
        for old in [x for x in p.neg_top if x < end - cfg.longest_ms]:
            del p.neg_top[old]
    if not p.neg_top and not st.window_ms and not p.m_sum[_SCORED]:  # m_sum: every row, the hour-old one too
        return  # nothing reviewed recently and nothing open: nothing to test
    baseline = baseline_share(st, cfg)
    verdicts = judge(_window_counts(p, end, cfg), baseline, cfg)
    incident = p.incidents.get("reviews")
    if incident is None or st.window_ms is None:
        firing = [v for v in verdicts if v.spike]
        if not firing:
            return
        v = max(firing, key=lambda v: (v.score, -v.window_ms))
        start = end - v.window_ms
        alert = alerts_mod.new_alert(
            alertname="negative_review_spike", signal="reviews", product_id=p.product_id, category=p.category,
            severity="critical" if v.bound >= cfg.critical_share else "warning", window_start_ms=start,
            window_end_ms=end, observed=round(v.k / v.n, 6), expected=round(baseline, 6), score=round(v.score, 6),
            evidence=_evidence(p, start, end, cfg.evidence_k))
        alert["annotations"]["description"] = _describe(v, baseline, start)
        st.window_ms, st.clear_steps = v.window_ms, 0
        p.incidents["reviews"] = alert
        out.append(Output("alert", alert["dedup_key"], alert))
        return
    # Clear when no window shows an elevated share any more (else the longest would fire again at once).
    st.clear_steps = st.clear_steps + 1 if all(x.bound < baseline + cfg.resolve_margin for x in verdicts) else 0
    if st.clear_steps < cfg.keep_firing_steps:
        return
    v = next((x for x in verdicts if x.window_ms == st.window_ms), max(verdicts, key=lambda x: x.window_ms))
    start = end - v.window_ms
    alert = alerts_mod.resolve_alert(p.incidents.pop("reviews"), window_start_ms=start, window_end_ms=end,
                                     observed=round(v.k / v.n, 6) if v.n else 0.0, expected=round(baseline, 6),
                                     score=round(v.score, 6))
    alert["annotations"] = {"summary": f"Resolved: negative-review spike on {p.product_id}",
                            "description": "Back to normal: " + _describe(v, baseline, start)}
    st.window_ms, st.clear_steps = None, 0
    out.append(Output("alert", alert["dedup_key"], alert))

