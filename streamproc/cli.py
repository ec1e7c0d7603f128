"""The ``streamproc`` command. Exit codes: 0 success, 2 usage or configuration error, 1 other failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from . import logs
from .errors import ConfigError, StreamprocError
from .settings import Settings

__all__ = ["main"]

log = logging.getLogger("streamproc")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamproc", description="Shop event streams -> demand windows, alerts and features.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="the whole system on this machine: broker, worker, traffic, webhook receiver")
    d.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until Ctrl-C)")
    d.add_argument("--web-port", type=int, default=None, help="web UI/API port (default STREAMPROC_WEB_PORT or 6066)")
    d.add_argument("--seed", type=int, default=7)

    b = sub.add_parser("broker", help="run the embedded Kafka-compatible broker in the foreground")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--data-dir", default=None, help="accepted for compatibility; the embedded broker keeps data in memory")

    sub.add_parser("worker", help="the Faust worker (all agents), configured by environment")

    g = sub.add_parser("generate", help="realistic click/order/review traffic into the input topics")
    g.add_argument("--rate", type=float, required=True, help="events per second (wall clock)")
    g.add_argument("--duration", type=float, required=True, help="seconds of wall-clock traffic")
    g.add_argument("--scenario", default="surges", help="steady, surges, demo, negative-reviews, sale, weekly")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--products", type=int, default=None)
    g.add_argument("--speed", type=float, default=1.0,
                   help="event time runs SPEED times the wall clock; 0 = as fast as possible")
    g.add_argument("--start-ms", type=int, default=None, help="event time of the first event (default: now)")
    g.add_argument("--truth", default=None, help="write the injected anomalies (JSON lines) here")
    g.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("replay", help="bulk-load recorded events (JSONL, optionally gzipped), keyed by product_id")
    r.add_argument("file")
    r.add_argument("--topic", required=True)
    r.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("score", help="sentiment of review texts (JSON lines out, in input order)")
    s.add_argument("texts", nargs="*", metavar="TEXT")
    s.add_argument("--file", default=None, help="JSON lines with a \"text\" field ('-': standard input)")
    s.add_argument("--progress", action="store_true", help="progress bar on stderr (default: only on a terminal)")

    bt = sub.add_parser("backtest", help="run the surge/drop detector over a historical count series (CSV)")
    bt.add_argument("--csv", required=True)
    bt.add_argument("--time-col", required=True)
    bt.add_argument("--value-col", required=True)
    bt.add_argument("--signal", default="orders", choices=["orders", "clicks"])
    bt.add_argument("--progress", action="store_true", help="progress bar on stderr (default: only on a terminal)")
    bt.add_argument("--plot", metavar="OUT.png", default=None,
                    help="also draw the series, expectation band and alerts into this image (needs matplotlib)")
    return p


@contextlib.contextmanager
def _bootstrap(settings: Settings) -> Iterator[str]:
    """The configured broker, or an embedded one for the duration of the block."""
    if settings.broker:
        yield settings.broker
        return
    from .broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


def _ensure_topics(settings: Settings, bootstrap: str) -> None:
    from .broker import create_topics, topic_specs

    asyncio.run(create_topics(bootstrap, topic_specs(settings), **_client_kwargs(settings)))


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    from .kafka_auth import client_kwargs

    return client_kwargs(settings)


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import EmbeddedBroker

    broker = EmbeddedBroker(args.port, data_dir=args.data_dir, quiet=False)
    broker.start()
    print(broker.bootstrap, flush=True)
    try:
        while broker.proc is not None and broker.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_worker(settings: Settings) -> int:
    import faust  # noqa: F401  (fail here, not half-way, if the install is broken)

    from .app import create_app
    from .sentiment import load_scorer

    scorer = load_scorer(settings.model_dir, threads=settings.sentiment_threads)  # a missing model: exit 2 now
    with _bootstrap(settings) as bootstrap:
        _ensure_topics(settings, bootstrap)
        app, _ = create_app(settings, bootstrap, scorer=scorer)
        from faust import Worker

        worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                        logging_config=logs.dict_config(settings.log_format, settings.log_level,
                                                        logs.secrets_of(settings)))
        print(f"streamproc worker: broker {bootstrap}, web http://{settings.web_host}:{settings.web_port}",
              flush=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from . import generator, loadgen

    if args.rate <= 0 or args.duration <= 0:
        raise ConfigError("--rate and --duration must be positive")
    speed = args.speed if args.speed > 0 else None
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    event_duration_ms = int(args.duration * 1000 * (args.speed if args.speed > 0 else 1.0))
    try:
        sc = generator.scenario(args.scenario, start_ms=start_ms, duration_ms=event_duration_ms,
                                rate_eps=args.rate / (args.speed if args.speed > 0 else 1.0), seed=args.seed,
                                products=args.products)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"--scenario {args.scenario!r}: {exc}") from None
    if args.truth:
        loadgen.write_truth(args.truth, generator.truth(sc))
    with _bootstrap(settings) as bootstrap:
        _ensure_topics(settings, bootstrap)
        report = asyncio.run(loadgen.produce(bootstrap, generator.events(sc, args.seed), speed=speed,
                                             progress=not args.no_progress, topic_names=dict(settings.topics),
                                             client_kwargs=_client_kwargs(settings)))
    print(report.summary() if hasattr(report, "summary") else report, file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from . import loadgen

    if not os.path.exists(args.file):
        raise ConfigError(f"{args.file}: no such file")
    with _bootstrap(settings) as bootstrap:
        _ensure_topics(settings, bootstrap)
        report = asyncio.run(loadgen.replay_file(bootstrap, args.file, args.topic, progress=not args.no_progress,
                                                 client_kwargs=_client_kwargs(settings)))
    print(report.summary() if hasattr(report, "summary") else report, file=sys.stderr)
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from .score_cli import score_main

    return score_main(args.texts, args.file, settings, sys.stdout, progress=args.progress)


def cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest import BacktestInputError, backtest_main

    try:
        from .progress import wanted

        return backtest_main(args.csv, args.time_col, args.value_col, args.signal, sys.stdout,
                             progress=wanted(args.progress), report=sys.stderr, plot=args.plot)
    except BacktestInputError as exc:
        raise ConfigError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamproc`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = _parser().parse_args(argv)
        if args.command == "backtest":
            return cmd_backtest(args)
        if args.command == "broker":
            return cmd_broker(args)
        settings = Settings.from_env()
        if args.command == "score":
            return cmd_score(args, settings)
        logs.configure(settings)
        if args.command == "worker":
            return cmd_worker(settings)
        if args.command == "generate":
            return cmd_generate(args, settings)
        if args.command == "replay":
            return cmd_replay(args, settings)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(settings, duration_s=args.duration, web_port=args.web_port, seed=args.seed)
    except ConfigError as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except StreamprocError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
