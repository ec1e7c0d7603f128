"""Window math and the unit watermark: which bucket an event lands in, when a bucket is final, and how
quiet or silent streams hold (or stop holding) the watermark.

Diagrams: ``[`` is a bucket start (inclusive), ``)`` its end (exclusive), ``^`` the watermark,
``|`` a final-at line (bucket end + grace). Times are in seconds unless marked ``ms``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.windows import UnitWatermark, WindowSpec, bucket_range, bucket_start

S = 1_000  # one second in ms


# -- bucket math ---------------------------------------------------------------------------------


def test_event_lands_in_the_bucket_that_contains_it() -> None:
    # size 5s
    # 0    5    10   15
    # [ b0 )[ b5 )[b10 )
    #   ^2   ^5 ^9  ^10
    assert bucket_start(2 * S, 5 * S) == 0
    assert bucket_start(5 * S, 5 * S) == 5 * S  # a bucket's start belongs to it
    assert bucket_start(10 * S - 1, 5 * S) == 5 * S  # the last millisecond still belongs to b5
    assert bucket_start(10 * S, 5 * S) == 10 * S


def test_bucket_start_before_the_epoch_rounds_down() -> None:
    # -5   0    5
    # [b-5 )[ b0 )
    #    ^-1
    assert bucket_start(-1, 5 * S) == -5 * S


@given(ts=st.integers(-(10**13), 10**13), size=st.integers(1, 10**8))
def test_every_timestamp_is_in_exactly_one_bucket(ts: int, size: int) -> None:
    start = bucket_start(ts, size)
    assert start <= ts < start + size
    assert start % size == 0


def test_bucket_range_lists_every_start_inclusive() -> None:
    # [ b0 )[ b5 )[b10 )[b15 )
    # ^first            ^last
    assert list(bucket_range(0, 15 * S, 5 * S)) == [0, 5 * S, 10 * S, 15 * S]
    assert list(bucket_range(10 * S, 10 * S, 5 * S)) == [10 * S]
    assert list(bucket_range(15 * S, 10 * S, 5 * S)) == []


# -- is_final / last_final_start -----------------------------------------------------------------


def test_bucket_is_final_once_the_watermark_reaches_end_plus_grace() -> None:
    spec = WindowSpec(bucket_ms=5 * S, grace_ms=1 * S)
    # 0    5 6  10
    # [ b0 ) |
    #      ^5.999 -> not final
    assert not spec.is_final(0, 6 * S - 1)
    # [ b0 ) |
    #        ^6     -> final exactly at end + grace
    assert spec.is_final(0, 6 * S)
    # [ b0 )[ b5 ) |
    #        ^6     -> b5 is still open
    assert not spec.is_final(5 * S, 6 * S)


def test_without_grace_a_bucket_is_final_at_its_end() -> None:
    spec = WindowSpec(bucket_ms=5 * S, grace_ms=0)
    # [ b0 )
    #      ^5
    assert spec.is_final(0, 5 * S)
    assert not spec.is_final(0, 5 * S - 1)


def test_last_final_start_is_the_newest_final_bucket() -> None:
    spec = WindowSpec(bucket_ms=5 * S, grace_ms=1 * S)
    # 0    5    10   15
    # [ b0 )[ b5 )[b10 )
    #        |    |
    #             ^11  -> b0 and b5 are final, b10 is not
    assert spec.last_final_start(11 * S) == 5 * S
    # [ b0 )[ b5 )[b10 )
    #            ^10.999 -> only b0
    assert spec.last_final_start(11 * S - 1) == 0


@given(wm=st.integers(-(10**12), 10**12), size=st.integers(1, 10**7), grace=st.integers(0, 10**7))
def test_last_final_start_agrees_with_is_final(wm: int, size: int, grace: int) -> None:
    spec = WindowSpec(bucket_ms=size, grace_ms=grace)
    last = spec.last_final_start(wm)
    assert spec.is_final(last, wm)
    assert not spec.is_final(last + size, wm)


# -- the unit watermark --------------------------------------------------------------------------

SPEC = WindowSpec(bucket_ms=5 * S, allowed_lateness_ms=2 * S, grace_ms=1 * S, idle_timeout_ms=10 * S)


def test_no_watermark_before_any_stream_has_spoken() -> None:
    wm = UnitWatermark(SPEC)
    assert wm.advance(0) is None
    wm.register("clicks/0", 0)
    assert wm.advance(1 * S) is None
    assert not wm.is_late(0)  # nothing is late without a watermark


def test_unit_watermark_is_the_minimum_over_active_streams() -> None:
    # lateness 2, grace 1, size 5      ts: 0    5    10   15
    # clicks/0 max ts 13 -> wm 11          [ b0 )[ b5 )[b10 )
    # orders/0 max ts 12 -> wm 10                    ^10
    wm = UnitWatermark(SPEC)
    wm.observe("clicks/0", 13 * S, wall_ms=0)
    wm.observe("orders/0", 12 * S, wall_ms=0)
    assert wm.advance(1 * S) == 10 * S
    # b0 ends 5 (+1 grace = 6 <= 10): final; b5 ends 10 (+1 = 11 > 10): open
    assert wm.is_late(4 * S)
    assert not wm.is_late(5 * S)
    assert not wm.is_late(9 * S)


def test_stream_max_is_the_largest_ts_not_the_latest() -> None:
    # clicks/0: 13 then 9 (9 is out of order, within lateness) -> max stays 13 -> wm 11
    wm = UnitWatermark(SPEC)
    wm.observe("clicks/0", 13 * S, wall_ms=0)
    wm.observe("clicks/0", 9 * S, wall_ms=0)
    assert wm.advance(0) == 11 * S


def test_a_covered_stream_holds_the_watermark_only_while_touched() -> None:
    # order-items/0 carries lines whose time the holds account for: its deliveries do not make it active
    #   clicks/0       ──────────────────────30     -> wm 28
    #   order-items/0  ────────12 (covered)          -> ignored ...
    #                  touched (backlog): ────12     -> wm 10, until it idles (10 s)
    wm = UnitWatermark(SPEC)
    wm.observe("clicks/0", 30 * S, wall_ms=20 * S)
    wm.observe("order-items/0", 12 * S, wall_ms=20 * S, covered=True)
    assert wm.advance(21 * S) == 28 * S
    wm2 = UnitWatermark(SPEC)
    wm2.observe("clicks/0", 30 * S, wall_ms=20 * S)
    wm2.observe("order-items/0", 12 * S, wall_ms=20 * S, covered=True)
    wm2.touch("order-items/0", 20 * S)
    assert wm2.advance(21 * S) == 10 * S
    assert wm2.advance(29 * S) == 10 * S  # still within the idle timeout of the touch
    assert wm2.advance(30 * S) == 28 * S
    # without covered, the line's delivery holds the unit like any stream
    wm3 = UnitWatermark(SPEC)
    wm3.observe("clicks/0", 30 * S, wall_ms=20 * S)
    wm3.observe("order-items/0", 12 * S, wall_ms=20 * S)
    assert wm3.advance(21 * S) == 10 * S


def test_registered_but_silent_stream_holds_the_watermark() -> None:
    # clicks/0 at 30 -> would give 28, but orders/0 is assigned and has said nothing yet
    #   clicks/0 ──────────────────────────30
    #   orders/0 (registered, silent)  ?
    #   unit wm: none
    wm = UnitWatermark(SPEC)
    wm.register("orders/0", wall_ms=0)
    wm.observe("clicks/0", 30 * S, wall_ms=0)
    assert wm.advance(5 * S) is None
    assert not wm.is_late(0)
    # orders/0 speaks at 20 -> wm = min(28, 18) = 18
    wm.observe("orders/0", 20 * S, wall_ms=6 * S)
    assert wm.advance(6 * S) == 18 * S


def test_registering_an_already_known_stream_changes_nothing() -> None:
    wm = UnitWatermark(SPEC)
    wm.observe("clicks/0", 30 * S, wall_ms=0)
    wm.register("clicks/0", wall_ms=5 * S)
    assert wm.advance(5 * S) == 28 * S


def test_silent_registered_stream_stops_holding_after_the_idle_timeout() -> None:
    # wall:     0 ........ 9.999 | 10 (idle timeout of orders/0)
    # orders/0: registered, silent
    # clicks/0: keeps delivering ts 30
    wm = UnitWatermark(SPEC)
    wm.register("orders/0", wall_ms=0)
    wm.observe("clicks/0", 30 * S, wall_ms=9 * S)
    assert wm.advance(10 * S - 1) is None
    assert wm.advance(10 * S) == 28 * S


def test_idle_stream_is_left_out_after_the_idle_timeout() -> None:
    #            event time: 0    5    10   15   20   25   30
    # orders/0 (quiet since wall 0)  ──12
    # clicks/0 (live)        ───────────────────────────────30
    # before idle: wm = min(10, 28) = 10 ^
    # after idle:  wm = 28 (clicks/0 alone)                ^
    wm = UnitWatermark(SPEC)
    wm.observe("orders/0", 12 * S, wall_ms=0)
    wm.observe("clicks/0", 30 * S, wall_ms=0)
    assert wm.advance(1 * S) == 10 * S
    wm.observe("clicks/0", 30 * S, wall_ms=10 * S)  # clicks/0 keeps talking
    assert wm.advance(10 * S - 1) == 10 * S  # orders/0 quiet 9.999s: still holds
    assert wm.advance(10 * S) == 28 * S  # quiet 10s: idle, left out
    assert wm.is_late(20 * S)  # b20 ends 25, +1 grace = 26 <= 28


def test_idle_stream_that_speaks_again_holds_again_but_the_watermark_does_not_go_back() -> None:
    # orders/0 idles out, clicks/0 alone pushes wm to 28; orders/0 wakes with ts 14 -> candidate 12
    #   wm: 10 ──► 28 ──► stays 28 (never goes back) ──► follows min again once both pass 28
    wm = UnitWatermark(SPEC)
    wm.observe("orders/0", 12 * S, wall_ms=0)
    wm.observe("clicks/0", 30 * S, wall_ms=10 * S)
    assert wm.advance(10 * S) == 28 * S
    wm.observe("orders/0", 14 * S, wall_ms=11 * S)
    assert wm.advance(11 * S) == 28 * S
    wm.observe("orders/0", 40 * S, wall_ms=12 * S)
    wm.observe("clicks/0", 35 * S, wall_ms=12 * S)
    assert wm.advance(12 * S) == 33 * S  # min(38, 33)


def test_when_every_stream_is_idle_the_watermark_follows_the_wall_clock() -> None:
    # last delivery at wall 0 (max ts 30 -> wm 28); idle timeout 10
    # wall:  0 ....... 10 ..... 15 ...... 40
    # wm:    28        28       33        58     (28 + wall - 0 - 10)
    wm = UnitWatermark(SPEC)
    wm.observe("clicks/0", 30 * S, wall_ms=0)
    wm.observe("orders/0", 25 * S, wall_ms=0)
    assert wm.advance(0) == 23 * S
    assert wm.advance(10 * S) == 28 * S  # both idle: from the freshest stream (30 - 2)
    assert wm.advance(15 * S) == 33 * S
    assert wm.advance(40 * S) == 58 * S
    # 50   55   60
    # [b50 )[b55 )
    #       |    |
    #          ^58 -> b50 is final (55 + 1 <= 58), b55 is not (60 + 1 > 58)
    assert wm.is_late(54 * S)
    assert not wm.is_late(55 * S)


def test_all_idle_advance_ignores_streams_that_never_spoke() -> None:
    wm = UnitWatermark(SPEC)
    wm.register("reviews/0", wall_ms=0)
    assert wm.advance(100 * S) is None  # idle and silent: nothing to go on
    wm.observe("clicks/0", 30 * S, wall_ms=100 * S)
    assert wm.advance(115 * S) == 33 * S  # both idle; clicks/0 is the freshest: 28 + 5


def test_after_a_restore_with_nothing_new_the_watermark_moves_on_from_the_restore_not_from_1970() -> None:
    # Found by the rebalance test: a unit restored from the table (event time 30 s reached before) whose
    # streams then stayed silent jumped ~57 years ahead (the restored pseudo-stream has no wall time), and
    # its tick stepped through every minute since for products with open incidents.
    wall0 = 1_795_000_000_000
    wm = UnitWatermark(SPEC)
    wm.register("clicks/0", wall_ms=wall0)
    wm.register("orders/0", wall_ms=wall0)
    wm.seed(30 * S)
    assert wm.advance(wall0) is None  # registered streams not heard of yet: wait
    assert wm.advance(wall0 + 10 * S) == 28 * S  # silent for the idle timeout: from the restored time
    assert wm.advance(wall0 + 15 * S) == 33 * S  # then with the wall clock
    only_restored = UnitWatermark(SPEC)
    only_restored.seed(30 * S)
    assert only_restored.advance(wall0) == 28 * S  # no wall time to count from: it does not move on


@given(steps=st.lists(
    st.tuples(st.sampled_from(["clicks/0", "orders/0", "reviews/0", None]),
              st.integers(0, 100_000), st.integers(0, 20_000)),
    max_size=40,
))
def test_watermark_never_goes_back(steps: list[tuple[str | None, int, int]]) -> None:
    wm = UnitWatermark(SPEC)
    wall = 0
    previous: int | None = None
    for stream, ts, wall_step in steps:
        wall += wall_step
        if stream is not None:
            wm.observe(stream, ts, wall)
        now = wm.advance(wall)
        if previous is not None:
            assert now is not None and now >= previous
        previous = now


@pytest.mark.parametrize(("ts_s", "late"), [(0, True), (4, True), (5, False), (9, False), (30, False)])
def test_is_late_means_the_bucket_is_already_final(ts_s: int, late: bool) -> None:
    # lateness 2, grace 1        0    5    10
    # clicks/0 max 12 -> wm 10   [ b0 )[ b5 )
    #                                 |    ^10   b0 final at 6; b5 final at 11
    wm = UnitWatermark(SPEC)
    wm.observe("clicks/0", 12 * S, wall_ms=0)
    wm.advance(0)
    assert wm.is_late(ts_s * S) is late


def test_is_late_uses_the_last_advanced_watermark_not_the_latest_event() -> None:
    # An event raises the stream's max but nothing is late until the watermark is advanced.
    wm = UnitWatermark(SPEC)
    wm.observe("clicks/0", 12 * S, wall_ms=0)
    wm.advance(0)  # wm 10
    wm.observe("clicks/0", 40 * S, wall_ms=0)
    assert not wm.is_late(6 * S)
    wm.advance(0)  # wm 38
    assert wm.is_late(6 * S)
