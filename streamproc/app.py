"""The worker as a Faust application: the only module that imports faust.

Faust runs the process — start-up and shutdown order, signals, logging — and one service,
:class:`WorkerService`, which owns the parts: the :class:`~streamproc.runner.Runner` (the input consumer
loop and its checkpoints), the HTTP API, silences and webhook delivery.

Faust's own consumer is left out (``BootStrategy.enable_kafka_consumer = False``, Faust's documented way
to choose the services an app starts): its per-record path (a Message, an Event, a queue hand-off and an
acknowledgement per record, ~150 µs of CPU each) bounded the worker at ~8k records/s, and the batch
extension it would take to avoid it reaches into private consumer internals. The runner reads the input
topics with aiokafka directly, in batches, and keeps its state in its own changelog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import Service

from .categories import CategoryEngine
from .clock import Clock, SystemClock
from .delivery_service import DeliveryService
from .kafka_auth import broker_credentials, client_kwargs
from .lifecycle import Notifier
from .metrics import Metrics
from .runner import Runner
from .runtime import Runtime
from .sentiment import Scorer, load_scorer
from .settings import Settings
from .silences import SilenceLog, SilenceService, SilenceStore
from .web import WebServer

__all__ = ["create_app", "WorkerService"]

log = logging.getLogger(__name__)


class _Boot(BootStrategy):  # type: ignore[misc]
    enable_kafka_consumer = False  # the runner reads the input topics (module docstring)


class _App(faust.App):  # type: ignore[misc]
    BootStrategy = _Boot


class WorkerService(Service):  # type: ignore[misc]
    """Starts the runner, silences, delivery and the HTTP API; runs the loop; stops them in reverse."""

    def __init__(self, settings: Settings, runtime: Runtime, runner: Runner, silences: SilenceService,
                 silence_log: SilenceLog, delivery: DeliveryService | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.runtime = runtime
        self.runner = runner
        self.silences = silences
        self.silence_log = silence_log
        self.delivery = delivery
        self.web: WebServer | None = None

    async def on_start(self) -> None:
        # Product states are long-lived and seldom cyclic: the cyclic collector's default thresholds walked the
        # whole growing heap of them over and over (~55 of ~190 µs per event with 100k products, engine alone).
        gc.set_threshold(100_000, 50, 100)
        await self.silence_log.start()
        if self.delivery is not None:
            await self.delivery.start()
        self.web = WebServer(self.runtime, self.settings, self.silences)  # its own thread: readers never hold up processing
        await self.web.start()
        log.warning("streamproc web on http://%s:%d", self.settings.web_host, self.settings.web_port)
        await self.runner.start()
        self.add_future(self._run())

    async def _run(self) -> None:
        try:
            await self.runner.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A loop that died must not leave a process that answers /healthz and reads nothing: stop the worker
            # (exit 1); its supervisor restarts it from the last checkpoint.
            log.exception("the processing loop failed; stopping the worker")
            await self.crash(exc)

    async def on_stop(self) -> None:
        await self.runner.stop()
        if self.web is not None:
            await self.web.stop()
        if self.delivery is not None:
            await self.delivery.stop()
        await self.silence_log.stop()


def create_app(settings: Settings, bootstrap: str, *, clock: Clock | None = None,
               scorer: Scorer | None = None) -> tuple[faust.App, Runtime]:
    """Build the worker. ``scorer``: review sentiment (default: the model of STREAMPROC_MODEL_DIR or the
    packaged one; ConfigError if missing)."""
    if scorer is None:
        scorer = load_scorer(settings.model_dir, threads=settings.sentiment_threads)
    app = _App(
        settings.app_id,
        broker=",".join(f"kafka://{b.strip()}" for b in bootstrap.split(",")),
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=settings.data_dir,
        web_enabled=False,
    )
    metrics = Metrics()

    async def unbound_send(*_args: Any) -> None:
        raise RuntimeError("the runner binds the runtime's send")

    runtime = Runtime(settings, unbound_send, metrics=metrics, clock=clock or SystemClock(), scorer=scorer)
    runner = Runner(settings, bootstrap, runtime, client_kwargs=client_kwargs(settings))
    # Alert delivery (docs/alert-delivery.md): marks and repeats on the way to `alerts`; webhooks read `alerts`.
    silence_store = SilenceStore()
    silence_log = SilenceLog(bootstrap, f"{settings.app_id}-silences", silence_store, client_kwargs(settings))
    silences = SilenceService(silence_store, silence_log.persist)
    runtime.notifier = Notifier(silences=silence_store, repeat_interval_ms=settings.alert_repeat_interval_ms,
                                metrics=metrics,
                                categories=CategoryEngine(runtime.engine, dataclasses.replace(
                                    settings.detector_config(), warmup_ms=settings.category_warmup_ms)),
                                owned=lambda a: a["labels"].get("scope") == "category"
                                or a["labels"].get("product_id") in runtime.engine.index)
    delivery = DeliveryService(settings, bootstrap, metrics=metrics, clock=runtime.clock) \
        if settings.webhook_urls else None
    app.service(WorkerService(settings, runtime, runner, silences, silence_log, delivery))  # type: ignore[arg-type]  # Faust starts an instance as given
    app.streamproc_runtime = runtime  # type: ignore[attr-defined]
    return app, runtime
