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
    """Usage errors raise ConfigError (exit 2); an unknown option is reported by the subcommand it was
    given to, with that subcommand's usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise ConfigError(message)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self._subcommands.get(getattr(parsed, "command", None) or "", self)
            sub.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    @property
    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}


def _port(text: str) -> int:
    """argparse type: a TCP port number (1-65535)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; use 1-65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number; use 1-65535")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive(text: str) -> float:
    """argparse type: a number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def _non_negative(text: str) -> float:
    """argparse type: a number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


_EXIT_CODES = "Exit codes: 0 success, 2 usage or configuration error (one line saying what to fix), 1 other failure."


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamproc", description="Shop event streams -> demand windows, alerts and features.",
                epilog=_EXIT_CODES + " Configuration is read from STREAMPROC_* environment variables (see the README).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="the whole system on this machine: broker, worker, traffic, webhook receiver, dashboard",
        description="Start an embedded broker, a worker, generated shop traffic with injected anomalies, a local "
                    "webhook receiver and the dashboard. Prints the dashboard address, each injection when it "
                    "starts, and each alert once, marked as matching an injection or not.",
        epilog="Ctrl-C (or --duration) stops everything. The worker's own log goes to "
               "$STREAMPROC_DATA_DIR/demo-worker.log. " + _EXIT_CODES)
    d.add_argument("--duration", type=_positive, default=None, metavar="S",
                   help="stop after S seconds of wall-clock time (default: run until Ctrl-C)")
    d.add_argument("--web-port", type=_port, default=None, metavar="N",
                   help="port of the dashboard and HTTP API (default: STREAMPROC_WEB_PORT, else 6066)")
    d.add_argument("--seed", type=int, default=7, help="random seed of the generated traffic and injections (default: 7)")

    b = sub.add_parser(
        "broker", help="run the embedded Kafka-compatible broker in the foreground",
        description="Run the embedded Kafka-compatible broker (Tansu) in the foreground; prints its bootstrap "
                    "address (host:port) on stdout. Data is kept in memory only.",
        epilog="Ctrl-C stops it. " + _EXIT_CODES)
    b.add_argument("--port", type=_port, default=9092, metavar="N", help="port to listen on, on 127.0.0.1 (default: 9092)")
    b.add_argument("--data-dir", default=None, metavar="D",
                   help="accepted for compatibility; the embedded broker keeps data in memory")

    sub.add_parser(
        "worker", help="the Faust worker (all agents), configured by environment",
        description="Run the stream processor: reads clicks/orders/reviews, writes alerts, scored-reviews, "
                    "product-features and dead-letters, and serves the HTTP API and dashboard on "
                    "STREAMPROC_WEB_PORT. Configured by STREAMPROC_* environment variables; without "
                    "STREAMPROC_BROKER it starts an embedded broker.",
        epilog=_EXIT_CODES)

    g = sub.add_parser(
        "generate", help="realistic click/order/review traffic into the input topics",
        description="Send generated shop traffic (clicks, orders, reviews; English and Chinese reviews) with "
                    "the scenario's injected anomalies to the input topics. Shows a progress bar on stderr and "
                    "ends with a one-line summary there.",
        epilog=_EXIT_CODES)
    g.add_argument("--rate", type=_positive, required=True, metavar="EPS", help="events per second (wall clock)")
    g.add_argument("--duration", type=_positive, required=True, metavar="S", help="seconds of wall-clock traffic")
    g.add_argument("--scenario", default="surges", metavar="NAME",
                   help="steady, surges (default), demo, negative-reviews, sale or weekly")
    g.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same events (default: 1)")
    g.add_argument("--products", type=int, default=None, metavar="N",
                   help="catalogue size (default: 200 for demo, else 1000)")
    g.add_argument("--speed", type=_non_negative, default=1.0, metavar="K",
                   help="event time runs K times the wall clock; 0 = as fast as possible (default: 1)")
    g.add_argument("--start-ms", type=int, default=None, metavar="MS",
                   help="event time of the first event, epoch ms (default: now)")
    g.add_argument("--truth", default=None, metavar="F", help="write the injected anomalies (JSON lines) to F")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = sub.add_parser(
        "replay",
        help="bulk-load recorded events (JSONL, optionally gzipped), keyed by product_id",
        description="Send the lines of a JSON-lines file (optionally gzipped) to a topic, keyed by product_id "
                    "(orders: the first item's), with ts as the record timestamp. Ends with a one-line summary "
                    "on stderr.",
        epilog=_EXIT_CODES)
    r.add_argument("file", metavar="FILE", help="JSON lines, plain or .gz")
    r.add_argument("--topic", required=True, metavar="T", help="topic to write to (e.g. clicks)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser(
        "score", help="sentiment of review texts (JSON lines out, in input order)",
        description="Score texts with the packaged sentiment model. Prints one JSON line per text, in input "
                    "order: the input object ({\"text\": ...} for an argument) plus \"label\" "
                    "(negative|neutral|positive) and the probabilities \"negative\", \"positive\".",
        epilog=_EXIT_CODES)
    s.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score (in addition to --file)")
    s.add_argument("--file", default=None, metavar="F",
                   help="JSON lines with a \"text\" field ('-': standard input)")
    s.add_argument("--progress", action="store_true", help="progress bar on stderr (default: only on a terminal)")

    bt = sub.add_parser(
        "backtest",
        help="run the surge/drop detector over a historical count series (CSV)",
        description="Run the live surge/drop detector over a count series, one CSV row per bucket (the bucket "
                    "length is the median spacing of the timestamps). Prints CSV on stdout, one row per input "
                    "row: timestamp,value,expected,score,alert (timestamp as read; expected = what the detector "
                    "expected before seeing the bucket; score in [0,1]; alert = 1 on the row where an incident "
                    "fires). A one-line summary goes to stderr.",
        epilog=_EXIT_CODES)
    bt.add_argument("--csv", required=True, metavar="F", help="input CSV file with a header row")
    bt.add_argument("--time-col", required=True, metavar="C",
                    help="column with the bucket time (ISO 8601 / RFC 3339, or epoch seconds or ms)")
    bt.add_argument("--value-col", required=True, metavar="C", help="column with the count per bucket")
    bt.add_argument("--signal", default="orders", choices=["orders", "clicks"],
                    help="what the counts are: orders (default) or clicks; both use the same detector settings")
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


def check_web_port(host: str, port: int, how_to_change: str) -> None:
    """Raise ConfigError (exit 2, one line) when the web server could not listen on ``host:port``; run before
    anything is started, so a taken port costs the user no broker start-up and no tracebacks."""
    import errno

    from .broker import listen_error

    exc = listen_error(host, port)
    if exc is None:
        return
    if exc.errno == errno.EADDRINUSE:
        raise ConfigError(f"port {port} is in use (another streamproc demo or worker, or another program); "
                          f"pick a free one with {how_to_change}")
    raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); check STREAMPROC_WEB_BIND "
                      f"or pick another port with {how_to_change}")


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

    check_web_port(settings.web_bind, settings.web_port, "STREAMPROC_WEB_PORT=N")
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

            port = args.web_port or settings.web_port
            check_web_port(settings.web_bind, port, "--web-port N (or STREAMPROC_WEB_PORT=N)")
            return run_demo(settings, duration_s=args.duration, web_port=port, seed=args.seed)
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
