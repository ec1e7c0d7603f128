"""Shared fixtures: the embedded broker for integration tests (one per session), the Apache Kafka fixtures
(``tests/kafka``), and ``broker``: the same test on both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from streamproc.broker import EmbeddedBroker
from tests.kafka.conftest_plugin import apache_kafka, apache_kafka_cluster  # noqa: F401 - session fixtures

# Property tests check behaviour, not speed: hypothesis's per-example deadline (200 ms) and its too_slow health
# check failed them on a loaded machine (passing again with the same seed).
hypothesis_settings.register_profile("streamproc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("streamproc")


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[str]:
    """Bootstrap address of a Tansu broker started for the test session."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


class Bootstrap(str):
    """A bootstrap address that also says which broker it is (``.kind``: ``embedded`` or ``apache``)."""

    kind: str

    def __new__(cls, address: str, kind: str) -> Bootstrap:
        self = super().__new__(cls, address)
        self.kind = kind
        return self


@pytest.fixture(scope="module", params=["embedded", "apache"])
def broker(request: pytest.FixtureRequest) -> Bootstrap:
    """The same tests on the embedded broker, then on the single-node Apache Kafka (skipped, with the reason
    printed, only when Java or Maven is missing). Module scope: a module's tests run on one, then the other."""
    if request.param == "embedded":
        return Bootstrap(request.getfixturevalue("embedded_broker"), "embedded")
    return Bootstrap(request.getfixturevalue("apache_kafka").bootstrap, "apache")
