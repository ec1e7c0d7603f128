"""Shared fixtures: the embedded broker for integration tests (one per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streamproc.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[str]:
    """Bootstrap address of a Tansu broker started for the test session."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
