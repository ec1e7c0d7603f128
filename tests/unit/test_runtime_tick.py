"""A tick of the worker's runtime that takes longer than the idle timeout (many closes, a slow producer on a
loaded machine) keeps the watermarks it started from: the streams marked backlogged for that instant stay
active, so no unit jumps ahead to its most advanced stream and the backlog's records are not late."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamproc import runtime
from streamproc.settings import Settings
from streamproc.testing import Harness

MIN = 60_000
T0 = 1_780_000_000_000 - 1_780_000_000_000 % MIN
SETTINGS = Settings.from_env({"STREAMPROC_PARTITIONS": "1", "STREAMPROC_CUSTOMERS": "0"})


SLICE = 50
"""Closes per slice of a tick, small so that a few products make a tick of several slices."""


async def test_a_tick_slower_than_the_idle_timeout_does_not_move_a_unit_past_its_backlogged_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "TICK_SLICE", SLICE)
    h = Harness(SETTINGS, start_ms=T0 + 10 * MIN, assign=True)
    rt = h.runtime
    h.clock.advance(SETTINGS.window.idle_timeout_ms + 1)  # reviews/0 and order-items/0 have nothing: idle
    n = 3 * SLICE  # three slices of closes in one tick
    clicks = [(f"P{i:05d}".encode(), orjson.dumps({"event_id": f"e{i}", "ts": T0 + i % MIN, "user_id": "u",
                                                     "product_id": f"P{i:05d}", "action": "view"})) for i in range(n)]
    clicks.append((b"P00000", orjson.dumps({"event_id": "last", "ts": T0 + 10 * MIN, "user_id": "u",
                                            "product_id": "P00000", "action": "view"})))
    await h.feed("clicks", clicks)
    # orders are two hours ahead; clicks have a backlog in the broker (the runner marks them active)
    await h.feed("orders", [(b"P00001", orjson.dumps({
        "order_id": "o1", "ts": T0 + 120 * MIN, "user_id": "u",
        "items": [{"product_id": "P00001", "quantity": 1, "unit_price": 3.0}]}))])
    rt.engine.touch_stream(0, "clicks/0", h.clock.now_ms())
    send = rt.send

    async def slow_send(*args: Any) -> None:  # the producer makes the loop wait: a minute of wall per slice
        h.clock.advance(MIN // SLICE + 1)
        await send(*args)

    rt.send = slow_send
    await rt.tick()
    wm = rt.engine.watermarks()[0]
    assert wm is not None and wm <= T0 + 10 * MIN - SETTINGS.window.allowed_lateness_ms, wm - T0
    assert len(h.outputs("product-features")) >= n  # every slice closed their products' first bucket
