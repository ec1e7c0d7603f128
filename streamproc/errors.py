"""The one exception root of streamproc.

    StreamprocError
     ├── ConfigError          bad configuration or usage; the CLI exits 2 with the message
     │    └── BrokerStartError  the embedded broker cannot start (binary missing, port in use)
     └── DeliveryError        an output could not be delivered (retriable flag says whether to retry)

Input records that cannot be processed are not exceptions: decoding returns them as
``events.DecodeError`` values, which the worker sends to the dead-letter topic.
"""

from __future__ import annotations

__all__ = ["StreamprocError", "ConfigError", "BrokerStartError", "DeliveryError"]


class StreamprocError(Exception):
    """Root of every error streamproc raises on purpose."""

    retriable: bool = False


class ConfigError(StreamprocError):
    """A configuration value or command-line argument is wrong; the message says how to fix it."""


class BrokerStartError(ConfigError):
    """The embedded broker could not be started."""


class DeliveryError(StreamprocError):
    """An alert or record could not be delivered to a sink."""

    def __init__(self, message: str, *, retriable: bool, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.retriable = retriable
        self.status = status
        self.body = body
