"""Notification policy between the engine and the ``alerts`` topic: repeats, silences and inhibition.

The engine already gives one incident per ``dedup_key`` (pending and keep-firing periods are the
detector's ``pending_steps`` / ``keep_firing_steps``, in event time). The :class:`Notifier` adds what
Alertmanager adds on top:

* **Repeat.** A still-firing incident is published again (same ``alert_id``, ``"repeat": n``) once
  ``repeat_interval_ms`` of wall time has passed since its last notification.
* **Silences.** An alert matching an active silence is published marked ``"silenced": true`` and
  ``"silenced_by": [ids]``; delivery skips it. When the silence ends while the incident still fires, the
  incident is published again at the next tick, unmarked.
* **Inhibition.** While a category-level surge (labels ``scope: category``) fires, product alerts with the
  same ``alertname``, ``signal`` and ``category`` carry ``"inhibited_by": <the category alert's dedup_key>``;
  delivery skips them unless ``STREAMPROC_WEBHOOK_SEND_INHIBITED=1``.
* A ``resolved`` record of an incident whose firing never paged carries the same marks, so a receiver
  never gets a resolve for something it was not told about.

Pure: time comes in as arguments. State is one small record per open incident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .demand import Output
from .metrics import Metrics
from .silences import SilenceStore

__all__ = ["Notifier", "Incident", "inhibitor", "is_category_alert", "MARKS"]

MARKS = ("silenced", "silenced_by", "inhibited_by")
"""Fields the notifier adds to an alert record (only when they apply)."""


class CategoryDetector(Protocol):
    def observe(self, outputs: list[Output]) -> list[Output]:
        """Category-level alert transitions for the buckets these outputs closed."""
        ...


@dataclass
class Incident:
    """What the notifier remembers about one open incident."""

    alert: dict[str, Any]
    """The firing record as the engine made it (without marks)."""
    last_notified_ms: int
    """Wall time of the last publication."""
    suppressed: bool
    """Whether the last publication was silenced or inhibited."""
    paged: bool
    """Whether any publication went out unsuppressed."""
    marks: dict[str, Any]
    repeats: int = 0


def is_category_alert(alert: dict[str, Any]) -> bool:
    return alert.get("labels", {}).get("scope") == "category"


def _inhibit_key(labels: dict[str, Any]) -> tuple[Any, Any, Any]:
    return labels.get("alertname"), labels.get("signal"), labels.get("category")


def inhibitor(alert: dict[str, Any], firing_categories: dict[tuple[Any, Any, Any], str]) -> str | None:
    """The dedup_key of the firing category alert that inhibits ``alert``, if any.

    Rule (Alertmanager terms): source ``scope="category"``, target has a ``product_id``, equal on
    ``alertname``, ``signal`` and ``category``.
    """
    labels = alert.get("labels", {})
    if is_category_alert(alert) or not labels.get("product_id") or not labels.get("category"):
        return None
    return firing_categories.get(_inhibit_key(labels))


class Notifier:
    """Marks and repeats alert notifications; see the module docstring."""

    def __init__(self, *, silences: SilenceStore | None = None, repeat_interval_ms: int = 4 * 3_600_000,
                 metrics: Metrics | None = None, categories: CategoryDetector | None = None,
                 owned: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.silences = silences or SilenceStore()
        self.owned = owned
        """Whether this worker still owns an incident (its product's partition); others are forgotten."""
        self.repeat_interval_ms = repeat_interval_ms
        self.metrics = metrics
        self.categories = categories
        self.open: dict[str, Incident] = {}
        self.firing_categories: dict[tuple[Any, Any, Any], str] = {}

    # -- marks ---------------------------------------------------------------------------------

    def marks(self, alert: dict[str, Any], now_ms: int, *, inhibit: bool = True) -> dict[str, Any]:
        """The marks ``alert`` gets at ``now_ms`` (empty: it pages)."""
        out: dict[str, Any] = {}
        muted_by = self.silences.muting(alert.get("labels", {}), now_ms)
        if muted_by:
            out["silenced"] = True
            out["silenced_by"] = muted_by
        by = inhibitor(alert, self.firing_categories) if inhibit else None
        if by:
            out["inhibited_by"] = by
        return out

    def _count(self, marks: dict[str, Any]) -> None:
        if self.metrics is not None:
            if marks.get("silenced"):
                self.metrics.alerts_suppressed.labels("silenced").inc()
            if marks.get("inhibited_by"):
                self.metrics.alerts_suppressed.labels("inhibited").inc()

    @staticmethod
    def _suppressed(marks: dict[str, Any]) -> bool:
        return bool(marks.get("silenced") or marks.get("inhibited_by"))

    # -- the pipeline --------------------------------------------------------------------------

    def process(self, outputs: list[Output], now_ms: int) -> list[Output]:
        """Outputs of one engine tick, with category alerts added, alerts marked, and due repeats appended."""
        if self.categories is not None:
            outputs = outputs + self.categories.observe(outputs)
        alerts = [o for o in outputs if o.kind == "alert"]
        # Category alerts first, so product alerts of the same tick see them.
        for o in sorted(alerts, key=lambda o: not is_category_alert(o.value)):
            if is_category_alert(o.value):
                key = _inhibit_key(o.value["labels"])
                if o.value["status"] == "firing":
                    self.firing_categories[key] = o.value["dedup_key"]
                elif self.firing_categories.get(key) == o.value["dedup_key"]:
                    del self.firing_categories[key]
        marked: dict[int, Output] = {}
        for o in alerts:
            marked[id(o)] = Output(o.kind, o.key, self._transition(o.value, now_ms))
        out = [marked.get(id(o), o) for o in outputs]
        out.extend(Output("alert", a["dedup_key"], a) for a in self.due(now_ms))
        return out

    def _transition(self, alert: dict[str, Any], now_ms: int) -> dict[str, Any]:
        key = alert["dedup_key"]
        if alert["status"] == "firing":
            marks = self.marks(alert, now_ms)
            sup = self._suppressed(marks)
            self.open[key] = Incident(dict(alert), now_ms, sup, not sup, marks)
        else:
            inc = self.open.pop(key, None)
            if inc is not None and not inc.paged:
                marks = dict(inc.marks)  # its firing never paged: neither does its end
            else:
                marks = self.marks(alert, now_ms, inhibit=False)
        self._count(marks)
        return {**{k: v for k, v in alert.items() if k not in MARKS}, **marks}

    def due(self, now_ms: int) -> list[dict[str, Any]]:
        """Open incidents to publish again: the repeat interval passed, or they were muted and no longer are."""
        out = []
        if self.owned is not None:
            for key in [k for k, inc in self.open.items() if not self.owned(inc.alert)]:
                del self.open[key]  # its partition moved to another worker, which repeats it now
        for inc in self.open.values():
            marks = self.marks(inc.alert, now_ms)
            sup = self._suppressed(marks)
            unmuted = inc.suppressed and not sup
            if not unmuted and now_ms - inc.last_notified_ms < self.repeat_interval_ms:
                continue
            inc.last_notified_ms = now_ms
            inc.suppressed = sup
            inc.marks = marks
            if sup:
                continue  # still muted: nothing to say
            inc.paged = True
            inc.repeats += 1
            out.append({**inc.alert, "repeat": inc.repeats})
        return out

    def restore(self, firing: Iterable[dict[str, Any]], now_ms: int) -> None:
        """Open incidents found after a restart (the engine's recovered state): assume they were notified
        ``now_ms``, so a restart neither re-pages nor loses track of their repeat."""
        for a in firing:
            if a.get("dedup_key") and a["dedup_key"] not in self.open:
                marks = {k: a[k] for k in MARKS if k in a}
                sup = self._suppressed(marks)
                self.open[a["dedup_key"]] = Incident({k: v for k, v in a.items() if k not in MARKS}, now_ms,
                                                     sup, not sup, marks)
