"""Kafka client security from :class:`~streamproc.settings.Settings`: SASL (PLAIN, SCRAM-SHA-256/512) and TLS.

One source for every Kafka client streamproc opens: :func:`client_kwargs` gives the keyword arguments of
aiokafka's clients (producer, consumer, admin), :func:`broker_credentials` the equivalent Faust
credentials object for ``faust.App(broker_credentials=...)``. With the default ``PLAINTEXT`` both are
empty, so nothing changes for the embedded broker.

:func:`check_auth` turns an authentication failure, which aiokafka only logs before it reports "Unable to
bootstrap", into a :class:`~streamproc.errors.ConfigError` naming the settings to fix, so a worker
with a wrong password stops at once (exit 2) instead of retrying until a deadline.
"""

from __future__ import annotations

import ssl
from typing import Any

from .errors import ConfigError
from .settings import Settings

__all__ = ["client_kwargs", "broker_credentials", "ssl_context", "check_auth", "SASL_PROTOCOLS", "SSL_PROTOCOLS"]

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
SSL_PROTOCOLS = ("SSL", "SASL_SSL")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the ``SSL`` / ``SASL_SSL`` protocols (hostname checked), or None."""
    if settings.kafka_security_protocol not in SSL_PROTOCOLS:
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        return create_ssl_context(cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile,
                                  keyfile=settings.kafka_ssl_keyfile, password=settings.kafka_ssl_key_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"STREAMPROC_KAFKA_SSL_CAFILE/_CERTFILE/_KEYFILE: cannot load ({exc}); "
                          "give PEM files (and STREAMPROC_KAFKA_SSL_KEY_PASSWORD for an encrypted key)") from None


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` / ``AIOKafkaAdminClient``
    (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    kw: dict[str, Any] = {"security_protocol": protocol}
    if protocol in SSL_PROTOCOLS:
        kw["ssl_context"] = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        kw["sasl_plain_password"] = settings.kafka_sasl_password
    return kw


def broker_credentials(settings: Settings) -> Any:
    """``faust.SASLCredentials`` / ``faust.SSLCredentials`` for the app, or None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    import faust  # lazily: app.py remains the only module that needs faust at import time

    ctx = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=ctx)
    return faust.SSLCredentials(ctx)


async def check_auth(bootstrap: str, timeout_s: float = 10.0, **kwargs: Any) -> None:
    """Open one connection to the first broker that answers; raise ConfigError if it refuses our credentials
    or certificate. Anything else (broker not up yet, refused TCP) is left for the caller's retries."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        AuthenticationFailedError,
        AuthenticationMethodNotSupported,
        IllegalSaslStateError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    auth_errors = (AuthenticationFailedError, AuthenticationMethodNotSupported, IllegalSaslStateError,
                   SaslAuthenticationFailed, UnsupportedSaslMechanismError, ssl.SSLCertVerificationError)
    for part in bootstrap.split(","):
        host, _, port = part.strip().rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **kwargs)
        except auth_errors as exc:
            raise ConfigError(
                f"Kafka at {host}:{port} refused the connection's credentials ({exc}); "
                "check STREAMPROC_KAFKA_SASL_USERNAME, STREAMPROC_KAFKA_SASL_PASSWORD, STREAMPROC_KAFKA_SASL_MECHANISM "
                "(and STREAMPROC_KAFKA_SSL_CAFILE/_CERTFILE/_KEYFILE for TLS)") from None
        except Exception:  # noqa: BLE001 - not an authentication problem: try the next broker
            continue
        conn.close()
        return
