"""Pytest fixtures for a real Apache Kafka (KRaft) broker / 3-node cluster, one per test session.

``tests/conftest.py`` imports them, so every test can ask for them (and for ``broker``, parametrized over
the embedded broker and Apache Kafka). Import them nowhere else: a second import would register a second
session fixture and start a second cluster.

They skip only when Java (17+) or Maven is missing (:class:`KafkaUnavailable`); a failing download,
format or start-up is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.kafka.apache_kafka import KafkaCluster, KafkaUnavailable, check_tools, resolve_kafka_classpath

#: SCRAM-SHA-256 user created at format time on the single node's SASL_PLAINTEXT listener
SCRAM_USER = "streamproc"
SCRAM_PASSWORD = "streamproc-secret"


def _start(n_nodes: int, tmp_path_factory: pytest.TempPathFactory, **kwargs: Any) -> KafkaCluster:
    try:
        check_tools(need_mvn=False)  # mvn only if the classpath is not cached yet
        classpath = resolve_kafka_classpath()
    except KafkaUnavailable as e:
        print(f"\nApache Kafka tests skipped: {e}")
        pytest.skip(f"Apache Kafka unavailable: {e}")
    cluster = KafkaCluster(
        n_nodes, tmp_path_factory.mktemp(f"apache-kafka-{n_nodes}n"), classpath=classpath, **kwargs
    )
    cluster.start(timeout_s=90)
    return cluster


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A single-node Apache Kafka (broker + controller): ``.bootstrap`` (PLAINTEXT) and ``.sasl_bootstrap``
    (SASL_PLAINTEXT, SCRAM-SHA-256, user :data:`SCRAM_USER` / :data:`SCRAM_PASSWORD`)."""
    cluster = _start(1, tmp_path_factory, scram_users={SCRAM_USER: SCRAM_PASSWORD})
    try:
        yield cluster
    finally:
        cluster.stop(timeout_s=2)  # throw-away data: no need to wait for a clean shutdown


@pytest.fixture(scope="session")
def apache_kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Apache Kafka nodes, each broker + controller (3-voter quorum), RF 3, min ISR 2."""
    cluster = _start(3, tmp_path_factory)
    try:
        yield cluster
    finally:
        cluster.stop(timeout_s=2)  # throw-away data: no need to wait for a clean shutdown
