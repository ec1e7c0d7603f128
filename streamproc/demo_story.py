"""What ``streamproc demo`` prints: the injection plan, each injection as it starts, each alert once,
marked as matching an injection or not, and the marketing triggers published so far. Pure: no I/O and no clock; :mod:`streamproc.demo` prints the lines.

Times on the console are event time relative to the start of the live traffic (``+3 min``); the demo's
event time runs ten times as fast as the wall clock, so ``+1 min`` is about six seconds later.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Injection", "Story", "injections", "matching_injection", "MATCH_SLACK_MS"]

MINUTE_MS = 60_000
MATCH_SLACK_MS = 10 * MINUTE_MS
"""An alert whose window starts up to this long after an injection ended still counts as caused by it
(detectors need a few buckets of evidence, and a drop is only sure after some empty ones)."""

_TRIGGER_WORDS = {"cart_abandoned": "cart abandoned", "browse_abandoned": "browse abandoned",
                  "win_back": "win-back", "interest_surging": "interest surging"}
_KIND_WORDS = {
    "demand_surge": "demand surge",
    "demand_drop": "demand drop",
    "negative_review_spike": "negative-review spike",
    "review_volume_spike": "review-volume spike (usual sentiment: should not alert)",
}


@dataclass(frozen=True)
class Injection:
    """One anomaly the demo's traffic generator injects (a row of :func:`streamproc.generator.truth`)."""

    number: int
    """1, 2, ... in start order: how the console refers to it."""
    kind: str
    """``demand_surge``, ``demand_drop``, ``negative_review_spike`` (the alertname it should raise)."""
    product_id: str
    category: str
    start_ms: int
    end_ms: int
    """Event time, exclusive."""
    factor: float

    def what(self) -> str:
        """``x10 demand surge on P00177 (books)``."""
        if self.kind == "demand_drop":
            head = "demand drop (no orders, few views)" if self.factor == 0 else f"x{self.factor:g} demand drop"
        elif self.kind == "negative_review_spike":
            head = f"negative-review spike (x{self.factor:g} reviews, mostly 1-2 stars)"
        else:
            head = f"x{self.factor:g} {_KIND_WORDS.get(self.kind, self.kind)}"
        return f"{head} on {self.product_id} ({self.category})"


def injections(truth_rows: Iterable[Mapping[str, Any]]) -> list[Injection]:
    """Number the ground-truth rows in start order."""
    rows = sorted(truth_rows, key=lambda r: (int(r["start_ms"]), str(r["product_id"])))
    return [Injection(i, str(r["kind"]), str(r["product_id"]), str(r["category"]), int(r["start_ms"]),
                      int(r["end_ms"]), float(r["factor"])) for i, r in enumerate(rows, 1)]


def _ms(rfc3339: str | None) -> int | None:
    if not rfc3339:
        return None
    try:
        return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def matching_injection(alert: Mapping[str, Any], plan: Iterable[Injection],
                       slack_ms: int = MATCH_SLACK_MS) -> Injection | None:
    """The injection that explains ``alert``, or None.

    Same kind (alertname), same product (a category alert: an injected product of that category), and the
    incident's time span — from ``starts_at`` to the end of its latest window — overlapping the injection
    or the ``slack_ms`` after it."""
    labels = alert.get("labels") or {}
    window = alert.get("window") or {}
    end = window.get("end_ms")
    starts = [t for t in (window.get("start_ms"), _ms(alert.get("starts_at"))) if t is not None]
    if end is None or not starts:
        return None
    start = min(starts)
    pid = labels.get("product_id")
    for inj in plan:
        if inj.kind != labels.get("alertname"):
            continue
        if pid is not None and inj.product_id not in (pid, "*"):
            continue
        if pid is None and inj.category not in (labels.get("category"), "*"):
            continue
        if end > inj.start_ms and start < inj.end_ms + slack_ms:
            return inj
    return None


def _offset(ms: int, zero_ms: int) -> str:
    minutes = (ms - zero_ms) / MINUTE_MS
    return f"{'+' if minutes >= 0 else '-'}{abs(minutes):.0f} min"


@dataclass
class Story:
    """The demo's console lines, given the injection plan and the event time the live traffic starts at."""

    plan: list[Injection]
    live_start_ms: int
    speed: float
    matched: dict[str, Injection | None] = field(default_factory=dict)
    """alert_id -> the injection its first record was matched to (later records of the incident reuse it)."""
    firing: int = 0
    firing_matched: int = 0
    resolved: int = 0
    alerted: set[int] = field(default_factory=set)
    """Numbers of the injections at least one firing alert matched."""
    started: set[int] = field(default_factory=set)
    printed: set[tuple[str, str, str]] = field(default_factory=set)
    """(alert_id, status, severity) already shown: redeliveries and repeats of a firing incident are not."""
    triggers_total: int = 0
    triggers_counts: dict[str, int] = field(default_factory=dict)
    """Marketing triggers published by kind, as of the last ``[triggers]`` line."""

    def plan_lines(self, horizon_ms: int) -> list[str]:
        """The injections that start within ``horizon_ms`` of event time after the live start, and how many
        follow."""
        soon = [i for i in self.plan if i.start_ms < self.live_start_ms + horizon_ms]
        secs = MINUTE_MS / 1000 / self.speed
        lines = [f"  injections (event time from the start of the live traffic; it runs {self.speed:g}x the wall "
                 f"clock, so +1 min is about {secs:.0f} s later):"]
        lines += [f"    #{i.number:<3} {_offset(i.start_ms, self.live_start_ms):>8} to "
                  f"{_offset(i.end_ms, self.live_start_ms):<8} {i.what()}" for i in soon]
        if len(soon) < len(self.plan):
            lines.append(f"    ... and {len(self.plan) - len(soon)} more later, each announced when it starts")
        lines.append("  Every injection is announced when it starts; every alert is printed once, marked "
                     "[injection #N] or [not injected].")
        return lines

    def starting(self, upto_ms: int) -> Iterator[str]:
        """Announcements of the injections that have started by event time ``upto_ms`` (each once)."""
        for inj in self.plan:
            if inj.start_ms <= upto_ms and inj.number not in self.started:
                self.started.add(inj.number)
                yield (f"[inject]  {_offset(inj.start_ms, self.live_start_ms):>8}  #{inj.number} starts: "
                       f"{inj.what()}, until {_offset(inj.end_ms, self.live_start_ms)}")

    def alert_line(self, alert: Mapping[str, Any]) -> str | None:
        """One line for an alert the webhook receiver got, marked with the injection it matches; None for
        one already shown (delivery is at-least-once, and a long-firing incident is sent again)."""
        status = str(alert.get("status", ""))
        aid = str(alert.get("alert_id", ""))
        lab = alert.get("labels") or {}
        seen = (aid, status, str(lab.get("severity")))
        if seen in self.printed:
            return None
        self.printed.add(seen)
        known = aid in self.matched
        inj = self.matched[aid] if known else matching_injection(alert, self.plan)
        if status == "firing" and not known:
            self.firing += 1
            self.firing_matched += inj is not None
            if inj is not None:
                self.alerted.add(inj.number)
        elif status == "resolved":
            self.resolved += 1
        self.matched[aid] = inj
        subject = lab.get("product_id") or f"category:{lab.get('category')}"
        if inj is None:
            mark = "[not injected: from the shop's ordinary traffic]"
        else:
            via = ", via its category" if lab.get("product_id") is None else ""
            mark = f"[injection #{inj.number}{via}]"
        note = f" [inhibited by {alert['inhibited_by']}]" if alert.get("inhibited_by") else ""
        end = (alert.get("window") or {}).get("end_ms")
        when = _offset(int(end), self.live_start_ms) if end is not None else "?"
        desc = (alert.get("annotations") or {}).get("description", "")
        return (f"[webhook] {when:>8}  {status.upper():8} {lab.get('alertname', ''):<22} {subject} "
                f"({lab.get('signal')}, {lab.get('severity')}) {mark}{note}: {desc}")

    def triggers_line(self, triggers: Mapping[str, Any], watermark_ms: int | None) -> str | None:
        """The marketing triggers the worker has published (``triggers``: the dashboard's ``triggers``), as
        of event time ``watermark_ms``; None when nothing changed since the last line."""
        counts = triggers.get("counts") or {}
        total = int(triggers.get("total") or 0)
        if total == self.triggers_total:
            return None
        self.triggers_total = total
        self.triggers_counts = dict(counts)
        when = _offset(watermark_ms, self.live_start_ms) if watermark_ms is not None else "?"
        parts = " · ".join(f"{_TRIGGER_WORDS.get(k, k)} {int(n):,}" for k, n in counts.items())
        latest = (triggers.get("latest") or [None])[0]
        tail = ""
        if latest:
            # no user id: the console is a log, and user ids are personal data (the dashboard shows them)
            tail = f"; latest: {_TRIGGER_WORDS.get(latest['kind'], latest['kind'])}"
            if latest.get("product_ids"):
                tail += f" ({', '.join(latest['product_ids'][:3])})"
        return f"[triggers] {when:>7}  {total:,} published: {parts}{tail}"

    def summary(self) -> str:
        """The closing line."""
        started = sorted(self.started)
        missed = [n for n in started if n not in self.alerted]
        return (f"{self.firing} alerts fired ({self.firing_matched} matching an injection, "
                f"{self.firing - self.firing_matched} not injected), {self.resolved} resolved; "
                f"{len(started) - len(missed)} of {len(started)} started injections alerted"
                + (f" (no alert yet for #{', #'.join(map(str, missed))})" if missed else "")
                + (f"; {self.triggers_total:,} marketing triggers" if self.triggers_total else ""))
