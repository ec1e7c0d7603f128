"""What the dashboard shows of the marketing triggers: how many of each kind this worker has published, and
the latest few.

Pure bookkeeping, updated where the worker publishes a trigger (``Runtime``) and read by the read model's
snapshots (read_model.py), so no request walks customer state. Counts are this worker's since it started
(like the Prometheus counter ``streamproc_marketing_triggers_total``): after a restart they start again from
zero, and a trigger emitted again after a crash (same ``trigger_id``) is counted by the worker that emitted it.
An erased customer's triggers leave the latest list at once; the counts keep them (they name nobody).
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["TriggerFeed", "KINDS", "LATEST_N"]

KINDS = ("cart_abandoned", "browse_abandoned", "win_back", "interest_surging")
"""The trigger kinds of customers.py, in the order the dashboard lists them."""
LATEST_N = 10
"""Triggers kept for the dashboard's latest list."""


class TriggerFeed:
    """Counts of published triggers by kind and the newest ``latest_n``, newest first."""

    def __init__(self, latest_n: int = LATEST_N) -> None:
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.latest: deque[dict[str, Any]] = deque(maxlen=latest_n)

    def record(self, trigger: dict[str, Any], published_ms: int) -> None:
        """A trigger was handed to the producer at wall-clock ``published_ms``."""
        kind = str(trigger.get("kind"))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.latest.appendleft({"trigger_id": trigger.get("trigger_id"), "kind": kind,
                                "user_id": trigger.get("user_id"), "ts": trigger.get("ts"),
                                "product_ids": trigger.get("product_ids"), "reason": trigger.get("reason"),
                                "published_ms": published_ms})

    def forget(self, user_id: str) -> None:
        """The customer was erased: their triggers leave the latest list."""
        kept = [t for t in self.latest if t["user_id"] != user_id]
        if len(kept) != len(self.latest):
            self.latest = deque(kept, maxlen=self.latest.maxlen)

    def view(self) -> dict[str, Any]:
        """``{"counts": {kind: n}, "total": n, "latest": [...]}``: a copy, safe to serialise elsewhere."""
        return {"counts": dict(self.counts), "total": sum(self.counts.values()),
                "latest": [dict(t) for t in self.latest]}
