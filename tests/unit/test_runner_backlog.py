"""The runner keeps a unit's watermark behind a partition that has records waiting, even before its first fetch."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from streamproc.runner import Runner
from streamproc.runtime import Runtime
from streamproc.settings import Settings


class _Consumer:
    """What ``Runner._touch_backlogged`` asks of the consumer: the assignment and the known high watermarks."""

    def __init__(self, assignment: set[TopicPartition], highs: dict[TopicPartition, int | None]) -> None:
        self._assignment, self._highs = assignment, highs

    def assignment(self) -> set[TopicPartition]:
        return self._assignment

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._highs.get(tp)


async def _send(*_: Any) -> None:
    return None


def _setup(end_at_assignment: int | None) -> tuple[Runtime, Runner, int]:
    settings = Settings()
    rt = Runtime(settings, _send)
    runner = Runner(settings, "127.0.0.1:9", rt)
    clicks, orders = TopicPartition(settings.topic("clicks"), 0), TopicPartition(settings.topic("orders"), 0)
    runner.consumer = _Consumer({clicks, orders}, {clicks: None, orders: 10})  # type: ignore[assignment]
    now = rt.clock.now_ms()
    long_ago = now - 120_000  # assigned two minutes ago: past any start-up grace
    for tp, logical in ((clicks, "clicks"), (orders, "orders")):
        rt.assign(logical, 0)
        runner.assigned_at[tp] = long_ago
        runner.next_offsets[tp] = 10 if logical == "orders" else 0  # orders read to its end, clicks not at all
    if end_at_assignment is not None:
        runner.assigned_end[clicks] = end_at_assignment
    wm = rt.engine.units[0].watermark
    wm.streams["clicks/0"].last_seen_wall_ms = long_ago  # registered then, silent since
    wm.observe("orders/0", 1_700_000_000_000, now)
    return rt, runner, now


def test_a_partition_not_fetched_yet_holds_its_unit_up_to_its_end_offset_at_the_assignment() -> None:
    rt, runner, now = _setup(end_at_assignment=500)
    runner._touch_backlogged()
    assert rt.engine.units[0].watermark.advance(now) is None  # clicks/0 has 500 records to come: wait for them


def test_without_the_end_offset_it_holds_only_for_the_start_up_grace() -> None:
    rt, runner, now = _setup(end_at_assignment=None)
    runner._touch_backlogged()
    wm = rt.engine.units[0].watermark.advance(now)
    assert wm is not None and wm >= 1_700_000_000_000 - rt.settings.window.allowed_lateness_ms
