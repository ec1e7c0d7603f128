"""Run an Apache Kafka cluster in the foreground: ``python -m tests.kafka.cli [--nodes 3]`` (Ctrl-C stops)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from tests.kafka.apache_kafka import (
    DEFAULT_KAFKA_VERSION,
    KafkaCluster,
    KafkaError,
    KafkaUnavailable,
    resolve_kafka_classpath,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.kafka.cli", description=__doc__)
    ap.add_argument("--nodes", type=int, default=1, help="number of KRaft combined nodes (default 1)")
    ap.add_argument(
        "--version", default=DEFAULT_KAFKA_VERSION, help="Apache Kafka version from Maven Central"
    )
    ap.add_argument(
        "--dir", type=Path, default=None, help="data directory (default: a temp dir, removed on exit)"
    )
    ap.add_argument(
        "--scram",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="add a SASL_PLAINTEXT listener with this SCRAM-SHA-256 user (repeatable)",
    )
    ap.add_argument("--timeout", type=float, default=90.0, help="start-up deadline in seconds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the readiness probe's client retries

    users = dict(u.split(":", 1) for u in args.scram)
    try:
        t0 = time.monotonic()
        classpath = resolve_kafka_classpath(args.version)
        t1 = time.monotonic()
        cluster = KafkaCluster(
            args.nodes, args.dir, version=args.version, classpath=classpath, scram_users=users
        )
        cluster.start(timeout_s=args.timeout)
    except KafkaUnavailable as e:
        print(f"Apache Kafka unavailable: {e}", file=sys.stderr)
        return 2
    except KafkaError as e:
        print(f"Apache Kafka failed to start: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print(
            f"Apache Kafka {args.version}: {args.nodes} node(s) up in {time.monotonic() - t1:.1f}s "
            f"(classpath {t1 - t0:.1f}s); data in {cluster.base_dir}"
        )
        print(f"bootstrap: {cluster.bootstrap}")
        if cluster.sasl_bootstrap:
            print(f"sasl_bootstrap ({cluster.scram_mechanism}): {cluster.sasl_bootstrap}")
        print("Ctrl-C to stop", flush=True)
        reported: set[int] = set()
        while not stop.wait(1.0):
            for node in cluster.nodes:
                if not node.running and node.node_id not in reported:
                    reported.add(node.node_id)
                    print(
                        f"node {node.node_id} exited ({node.proc.returncode if node.proc else '?'}); "
                        f"log: {node.log_path}",
                        file=sys.stderr,
                    )
            if len(reported) == len(cluster.nodes):
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
