"""The worker's input topics and Faust's flow control (no broker: the app is built, never started)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust

from streamproc.app import InputTopic, create_app
from streamproc.settings import Settings


def _app() -> faust.App:
    app, _runtime = create_app(Settings.from_env({}), "127.0.0.1:1", scorer=object())  # type: ignore[arg-type]
    return app


def test_every_agent_reads_an_input_topic_whose_buffer_survives_a_flow_resume() -> None:
    # Faust resumes the flow after its post-recovery seek and then empties the buffers it manages; records
    # fetched in between were lost. The agents' buffers must not be among them.
    async def check() -> list[tuple[str, int]]:
        app = _app()
        out = []
        for agent in app.agents.values():
            channel: Any = agent.channel.clone(is_iterator=True)  # what the agent's stream iterates
            assert isinstance(channel, InputTopic)
            channel.queue.put_nowait("a record")
            app.flow_control.resume()
            app.flow_control.clear()  # what a revocation does
            out.append((channel.get_topic_name(), channel.queue.qsize()))
        return out

    found = asyncio.run(check())
    assert {name for name, _ in found} >= {"clicks", "orders", "reviews"}
    assert all(kept == 1 for _, kept in found), found


def test_a_plain_faust_topic_buffer_is_emptied_by_a_flow_resume() -> None:
    # The behaviour InputTopic exists to avoid (if Faust stops doing this, InputTopic can go).
    async def check() -> int:
        app = _app()
        channel: Any = app.topic("plain", key_type=bytes, value_type=bytes).clone(is_iterator=True)
        channel.queue.put_nowait("a record")
        app.flow_control.resume()
        return int(channel.queue.qsize())

    assert asyncio.run(check()) == 0


def test_an_input_buffer_hands_out_nothing_while_the_flow_is_suspended() -> None:
    # Faust's stream skips and acknowledges a record it takes while the flow is suspended, or one of an
    # older consumer generation: the record was committed over without being counted.
    async def check() -> list[Any]:
        app = _app()
        agent = next(iter(app.agents.values()))
        queue: Any = agent.channel.clone(is_iterator=True).queue
        seen: list[Any] = []
        record = SimpleNamespace(message=SimpleNamespace(generation_id=1))  # an event (no fetched_generation yet)
        app.flow_control.resume()
        waiting = asyncio.ensure_future(queue.get())  # the stream waiting on an empty buffer
        await asyncio.sleep(0)
        app.flow_control.suspend()  # a rebalance begins while it waits
        queue.put_nowait(record)  # a record fetched before it
        await asyncio.sleep(0.05)
        seen.append((waiting.done(), queue.empty(), queue.qsize()))  # not handed out; the stream sees nothing
        app.consumer_generation_id = 2
        app.flow_control.resume()
        seen.append(await asyncio.wait_for(waiting, 5))
        seen.append(queue.empty())
        return seen

    before, got, empty_after = asyncio.run(check())
    assert before == (False, True, 1)
    assert got.message.generation_id == 2  # handed out as a record of the current generation
    assert got.fetched_generation == 1  # what it was fetched under: the ordering check reads it
    assert empty_after
