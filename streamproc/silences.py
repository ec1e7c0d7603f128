"""Silences, as in Alertmanager: label matchers and a time range during which matching alerts do not page.

A silenced alert still goes to the ``alerts`` topic, marked ``"silenced": true`` with the ids in
``silenced_by``; webhook delivery skips it. :class:`SilenceStore` is pure (time passed in);
:class:`SilenceLog` keeps silences in a compacted topic (``<app_id>-silences``, key = silence id) that
every worker reads from the beginning at start and then follows, so silences survive restarts and
reach every worker. Deleting a silence expires it (its end becomes "now"), as Alertmanager does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
import re2

from .alerts import rfc3339

__all__ = ["Matcher", "Silence", "SilenceStore", "SilenceService", "SilenceLog", "parse_silence", "parse_time_ms",
           "silence_from_json", "InvalidSilence"]

log = logging.getLogger(__name__)

EXPIRED_RETENTION_MS = 5 * 86_400_000
"""Expired silences are still listed for this long (then dropped from memory and tombstoned)."""


MAX_PATTERN_CHARS = 1000
"""Longest regular expression a matcher may use."""


class InvalidSilence(ValueError):
    """A silence request that cannot be accepted; the message says why."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is reported to the API caller, not on stderr


@lru_cache(maxsize=1024)
def compile_matcher(pattern: str) -> Any:
    """``pattern`` anchored at both ends, compiled with RE2 (Alertmanager's syntax and semantics): matching
    takes linear time in the label value, whatever the pattern. Raises InvalidSilence."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidSilence(f"matchers: regular expression longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(f"^(?:{pattern})$", _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise InvalidSilence(f"matchers: bad regular expression {pattern!r} (RE2 syntax, as Alertmanager; "
                             f"no backreferences or lookaround): {detail}") from None


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition (Alertmanager's ``name``/``value``/``isRegex``/``isEqual``)."""

    name: str
    value: str
    is_regex: bool = False
    """``value`` is an RE2 regular expression anchored at both ends (:func:`compile_matcher`)."""
    is_equal: bool = True
    """False negates the match (``!=``, ``!~``)."""

    def matches(self, labels: dict[str, Any]) -> bool:
        raw = labels.get(self.name)
        actual = "" if raw is None else str(raw)
        hit = compile_matcher(self.value).search(actual) is not None if self.is_regex else actual == self.value
        return hit == self.is_equal

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence: all matchers must match, between ``starts_at_ms`` and ``ends_at_ms``."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at_ms: int
    ends_at_ms: int
    comment: str = ""
    created_by: str = ""
    updated_at_ms: int = 0

    def state(self, now_ms: int) -> str:
        """``pending`` (not started), ``active`` or ``expired``."""
        if now_ms < self.starts_at_ms:
            return "pending"
        return "active" if now_ms < self.ends_at_ms else "expired"

    def mutes(self, labels: dict[str, Any], now_ms: int) -> bool:
        """Whether this silence mutes an alert with ``labels`` at ``now_ms``."""
        return self.state(now_ms) == "active" and all(m.matches(labels) for m in self.matchers)

    def to_json(self, now_ms: int | None = None) -> dict[str, Any]:
        """The API shape (Alertmanager's, plus epoch-ms fields); ``status`` only when ``now_ms`` is given."""
        out: dict[str, Any] = {
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "startsAt": rfc3339(self.starts_at_ms),
            "endsAt": rfc3339(self.ends_at_ms),
            "starts_at_ms": self.starts_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "comment": self.comment,
            "createdBy": self.created_by,
            "updatedAt": rfc3339(self.updated_at_ms),
            "updated_at_ms": self.updated_at_ms,
        }
        if now_ms is not None:
            out["status"] = {"state": self.state(now_ms)}
        return out


def parse_time_ms(value: Any, field: str) -> int:
    """Epoch milliseconds (int) or an RFC 3339 string with offset."""
    if isinstance(value, bool):
        raise InvalidSilence(f"{field}: expected epoch milliseconds or an RFC 3339 time")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if dt.tzinfo is not None:
                return int(dt.timestamp() * 1000)
    raise InvalidSilence(f"{field}: expected epoch milliseconds or an RFC 3339 time with offset, got {value!r}")


def _matchers(raw: Any) -> tuple[Matcher, ...]:
    if isinstance(raw, dict):  # shorthand: {"product_id": "P1", "signal": "orders"}
        raw = [{"name": k, "value": v} for k, v in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise InvalidSilence("matchers: give a non-empty list of {name, value, isRegex?, isEqual?}")
    out = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"] \
                or not isinstance(m.get("value"), str):
            raise InvalidSilence(f"matchers: {m!r} needs a string name and a string value")
        is_regex, is_equal = bool(m.get("isRegex", False)), bool(m.get("isEqual", True))
        if is_regex:
            compile_matcher(m["value"])
        out.append(Matcher(m["name"], m["value"], is_regex, is_equal))
    if all(Matcher(m.name, m.value, m.is_regex, m.is_equal).matches({}) for m in out):
        raise InvalidSilence("matchers: these match alerts without any labels; add a matcher that needs a label")
    return tuple(out)


def parse_silence(body: Any, now_ms: int, *, new_id: str | None = None) -> Silence:
    """A silence from a POST body: ``matchers``, ``endsAt`` (required), ``startsAt`` (default now),
    ``comment``, ``createdBy``. Raises :class:`InvalidSilence`."""
    if not isinstance(body, dict):
        raise InvalidSilence("expected a JSON object with matchers, startsAt, endsAt, comment")
    matchers = _matchers(body.get("matchers"))
    starts = parse_time_ms(body["startsAt"], "startsAt") if body.get("startsAt") is not None else now_ms
    if body.get("endsAt") is None:
        raise InvalidSilence("endsAt: required (epoch milliseconds or RFC 3339)")
    ends = parse_time_ms(body["endsAt"], "endsAt")
    if ends <= starts:
        raise InvalidSilence("endsAt must be after startsAt")
    if ends <= now_ms:
        raise InvalidSilence("endsAt is in the past")
    given = body.get("id")
    sid: str = given if isinstance(given, str) and given else new_id or str(uuid.uuid4())
    return Silence(sid, matchers, max(starts, 0), ends, str(body.get("comment", ""))[:1000],
                   str(body.get("createdBy", ""))[:200], now_ms)


def silence_from_json(d: dict[str, Any]) -> Silence:
    """Read back what :meth:`Silence.to_json` wrote (the topic's record format); InvalidSilence for a regex
    RE2 does not take (written by a version that used Python's ``re``)."""
    matchers = tuple(Matcher(m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in d["matchers"])
    for m in matchers:
        if m.is_regex:
            compile_matcher(m.value)
    return Silence(d["id"], matchers,
                   d["starts_at_ms"], d["ends_at_ms"], d.get("comment", ""), d.get("createdBy", ""),
                   d.get("updated_at_ms", 0))


class SilenceStore:
    """The silences known to this worker."""

    def __init__(self) -> None:
        self.silences: dict[str, Silence] = {}

    def put(self, s: Silence) -> None:
        old = self.silences.get(s.id)
        if old is None or s.updated_at_ms >= old.updated_at_ms:
            self.silences[s.id] = s

    def delete(self, sid: str) -> None:
        self.silences.pop(sid, None)

    def get(self, sid: str) -> Silence | None:
        return self.silences.get(sid)

    def ordered(self, now_ms: int) -> list[Silence]:
        """Active first, then pending, then expired; newest first within each."""
        order = {"active": 0, "pending": 1, "expired": 2}
        return sorted(self.silences.values(), key=lambda s: (order[s.state(now_ms)], -s.updated_at_ms))

    def muting(self, labels: dict[str, Any], now_ms: int) -> list[str]:
        """Ids of the active silences matching ``labels``."""
        return sorted(s.id for s in self.silences.values() if s.mutes(labels, now_ms))

    def expire(self, sid: str, now_ms: int) -> Silence | None:
        """End a silence now (no-op for one already expired); None if unknown."""
        s = self.silences.get(sid)
        if s is None:
            return None
        if s.state(now_ms) != "expired":
            s = replace(s, ends_at_ms=max(now_ms, s.starts_at_ms), updated_at_ms=now_ms)
            if s.starts_at_ms > now_ms:
                s = replace(s, starts_at_ms=now_ms)
            self.silences[sid] = s
        return s

    def garbage(self, now_ms: int, retention_ms: int = EXPIRED_RETENTION_MS) -> list[str]:
        """Ids of silences expired for longer than ``retention_ms`` (to forget and tombstone)."""
        return [s.id for s in self.silences.values() if s.ends_at_ms + retention_ms < now_ms]

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the silences topic (a tombstone deletes)."""
        if value is None:
            if key:
                self.delete(key.decode())
            return
        try:
            self.put(silence_from_json(orjson.loads(value)))
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidSilence) as exc:
            log.warning("bad silence record %r: %s", key, exc)


Persist = Callable[[str, bytes | None], Awaitable[None]]


class SilenceService:
    """Creating and expiring silences: the store plus durable writes (``persist(id, value or None)``)."""

    def __init__(self, store: SilenceStore, persist: Persist | None = None) -> None:
        self.store = store
        self.persist = persist

    async def create(self, body: Any, now_ms: int) -> Silence:
        s = parse_silence(body, now_ms)
        if self.persist is not None:
            await self.persist(s.id, orjson.dumps(s.to_json()))
        self.store.put(s)
        return s

    async def expire(self, sid: str, now_ms: int) -> Silence | None:
        old = self.store.get(sid)
        if old is None:
            return None
        s = self.store.expire(sid, now_ms)
        if s is not None and s is not old and self.persist is not None:
            await self.persist(s.id, orjson.dumps(s.to_json()))
        return s

    async def collect_garbage(self, now_ms: int) -> None:
        for sid in self.store.garbage(now_ms):
            if self.persist is not None:
                await self.persist(sid, None)
            self.store.delete(sid)


class SilenceLog:
    """The compacted silences topic: load it all at start, follow it after, write to it."""

    def __init__(self, bootstrap: str, topic: str, store: SilenceStore,
                 client_kwargs: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client_kwargs = client_kwargs or {}
        """Kafka security settings (kafka_auth.client_kwargs) of its clients."""
        self.topic = topic
        self.store = store
        self._producer: Any = None
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    async def start(self, timeout_s: float = 30.0) -> None:
        """Create the topic if needed and read it to the end (so silences apply before alerts flow)."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from .broker import create_topics

        kw = self.client_kwargs
        await create_topics(self.bootstrap, [(self.topic, 1, {"cleanup.policy": "compact"})], **kw)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", **kw)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                          **kw)
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        end = (await self._consumer.end_offsets([tp]))[tp]
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await self._consumer.position(tp) < end and asyncio.get_running_loop().time() < deadline:
            await self._drain(500)
        self.loaded.set()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="silences")

    async def _drain(self, timeout_ms: int) -> None:
        found = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for recs in found.values():
            for r in recs:
                self.store.apply(r.key, r.value)

    async def _follow(self) -> None:
        while True:
            try:
                await self._drain(1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following; a broker hiccup must not end it
                log.warning("silences topic: %s", exc)
                await asyncio.sleep(1.0)

    async def persist(self, sid: str, value: bytes | None) -> None:
        """Write a silence (or a tombstone) and wait for the broker's ack."""
        await self._producer.send_and_wait(self.topic, value, key=sid.encode())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for c in (self._consumer, self._producer):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.stop()
