"""Logging: JSON lines (``STREAMPROC_LOG_FORMAT=json``) or human-readable text, never a secret.

Every record passes :class:`RedactSecrets`, which blanks the configured secrets (every ``Settings`` field
declared with ``repr=False``: webhook secret, SASL and key passwords, API token) wherever they appear, plus
bearer tokens, ``password=...`` pairs and passwords in URLs, in the message and in structured fields.
Structured fields ride on ``extra={"fields": {...}}`` and become top-level keys of a JSON line; the text
format shows them as ``key=value`` after the message.

The worker hands :func:`dict_config` to Faust's ``Worker(logging_config=...)``; other commands call
:func:`configure`.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "TextFormatter", "RedactSecrets", "configure", "dict_config", "secrets_of",
           "alert_fields", "LEVELS"]

LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG"}
REDACTED = "[redacted]"

_PATTERNS = (
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # key=value and "key": "value" pairs (not "secret: text", which is prose)
    (re.compile(r"(?i)((?:password|passwd|secret|token|api[_-]?key)\w*=)[^\s\"',;&}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:password|passwd|secret|token|api[_-]?key)\w*[\"']\s*:\s*[\"'])[^\"']+"), r"\1" + REDACTED),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), r"\1" + REDACTED + "@"),
)
_SECRET_KEYS = re.compile(r"(?i)password|passwd|secret|token|authorization|api[_-]?key|sasl")


def secrets_of(settings: Any) -> list[str]:
    """The secret values of a Settings: its fields declared ``repr=False`` that are set."""
    out = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if not f.repr and isinstance(value, str) and value:
            out.append(value)
    return out


class RedactSecrets(logging.Filter):
    """Blanks secrets in a record's message, arguments and structured fields (mutates the record)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, REDACTED)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def _value(self, key: str, value: Any) -> Any:
        if isinstance(value, str):
            return REDACTED if _SECRET_KEYS.search(key) and value else self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(key, v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = self.scrub("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = self._value("", fields)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, the structured
    fields, and ``exc`` for exceptions."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for k, v in fields.items():
                out.setdefault(str(k), v)
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else None)
        if exc:
            out["exc"] = exc
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 WARNING streamproc.runtime: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping) and fields:
            head, sep, tail = line.partition("\n")
            extra = " ".join(f"{k}={_short(v)}" for k, v in fields.items() if v is not None)
            line = f"{head} [{extra}]{sep}{tail}"
        return line


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else orjson.dumps(v, default=str).decode()
    return s if len(s) <= 200 else s[:197] + "..."


def dict_config(log_format: str = "text", level: str = "warn", secrets: Iterable[str] = (),
                stream: Any = "ext://sys.stderr") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one stream handler, the chosen format, secrets redacted."""
    formatter = {"()": JsonFormatter} if log_format == "json" else {"()": TextFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets, "secrets": list(secrets)}},
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": stream, "formatter": "default",
                                 "filters": ["redact"]}},
        "root": {"level": LEVELS.get(level, level.upper()), "handlers": ["default"]},
    }


def configure(settings: Any = None, *, log_format: str | None = None, level: str | None = None,
              stream: Any = None) -> None:
    """Configure the root logger from ``settings`` (``log_format``, ``log_level``, secrets)."""
    fmt = str(log_format or getattr(settings, "log_format", "text"))
    lvl = str(level or getattr(settings, "log_level", "warn"))
    secrets = secrets_of(settings) if settings is not None else []
    logging.config.dictConfig(dict_config(fmt, lvl, secrets, stream if stream is not None else sys.stderr))


def alert_fields(alert: Mapping[str, Any]) -> dict[str, Any]:
    """Structured fields of an alert state change (for ``extra={"fields": ...}``)."""
    labels = alert.get("labels", {})
    return {
        "event": "alert", "status": alert.get("status"), "alertname": labels.get("alertname"),
        "dedup_key": alert.get("dedup_key"), "alert_id": alert.get("alert_id"),
        "product_id": labels.get("product_id"), "category": labels.get("category"),
        "signal": labels.get("signal"), "severity": labels.get("severity"),
        "observed": alert.get("observed"), "expected": alert.get("expected"), "score": alert.get("score"),
        "window_start_ms": (alert.get("window") or {}).get("start_ms"),
        "silenced": alert.get("silenced"),
    }
