"""Configuration: one frozen :class:`Settings` built by :meth:`Settings.from_env` — the only reader of
the environment. Every variable is optional; a bad value raises :class:`ConfigError` with a one-line fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .errors import ConfigError
from .windows import WindowSpec

__all__ = ["Settings", "TOPICS", "INPUT_TOPICS", "ENV_VARS"]

#: Logical topic names; ``STREAMPROC_TOPIC_<NAME>`` (upper case, ``-`` as ``_``) renames each.
TOPICS = ("clicks", "orders", "reviews", "alerts", "scored-reviews", "product-features", "dead-letters")
INPUT_TOPICS = ("clicks", "orders", "reviews")

_INT_VARS = {
    "STREAMPROC_WEB_PORT": ("web_port", 0, 65535),
    "STREAMPROC_PARTITIONS": ("partitions", 1, 10_000),
    "STREAMPROC_MAX_RECORD_BYTES": ("max_record_bytes", 64, 100 << 20),
    "STREAMPROC_FEATURE_MAX_AGE_MS": ("feature_max_age_ms", 1, 10**12),
    "STREAMPROC_BATCH_SIZE": ("batch_size", 1, 1_000_000),
    "STREAMPROC_WEBHOOK_TIMEOUT_MS": ("webhook_timeout_ms", 1, 10**9),
}
_WINDOW_VARS = {
    "STREAMPROC_BUCKET_MS": ("bucket_ms", 1_000, 86_400_000),
    "STREAMPROC_ALLOWED_LATENESS_MS": ("allowed_lateness_ms", 0, 86_400_000 * 7),
    "STREAMPROC_GRACE_MS": ("grace_ms", 0, 86_400_000 * 7),
    "STREAMPROC_IDLE_TIMEOUT_MS": ("idle_timeout_ms", 100, 86_400_000),
    "STREAMPROC_MAX_FUTURE_MS": ("max_future_ms", 0, 10**13),
}


def _env_list() -> list[str]:
    names = ["STREAMPROC_BROKER", "STREAMPROC_STORE", "STREAMPROC_WEBHOOK_URLS", "STREAMPROC_WEBHOOK_SECRET",
             "STREAMPROC_MODEL_DIR", "STREAMPROC_APP_ID", "STREAMPROC_WEB_HOST", "STREAMPROC_DATA_DIR",
             "STREAMPROC_LOG_LEVEL", "STREAMPROC_WEB_BIND"]
    names += list(_INT_VARS) + list(_WINDOW_VARS)
    names += [f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}" for t in TOPICS]
    return names


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with its default."""

    broker: str | None = None
    """Bootstrap servers; None starts the embedded broker."""
    app_id: str = "streamproc"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    """Host name other workers and clients reach this worker's web server by."""
    web_bind: str = "0.0.0.0"
    store: str = "memory://"
    data_dir: str = "./streamproc-data"
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout_ms: int = 10_000
    model_dir: str | None = None
    partitions: int = 4
    """Partitions of the topics streamproc creates (all input topics get the same count)."""
    max_record_bytes: int = 1 << 20
    feature_max_age_ms: int = 600_000
    """Features not recomputed for this long (wall clock) are served as OUTSIDE_MAX_AGE."""
    batch_size: int = 2_000
    log_level: str = "warn"
    window: WindowSpec = WindowSpec()
    detect_overrides: tuple[tuple[str, float], ...] = ()
    """``STREAMPROC_DETECT_<FIELD>`` overrides of the detector defaults."""
    topics: tuple[tuple[str, str], ...] = tuple((t, t) for t in TOPICS)

    def topic(self, logical: str) -> str:
        """The real name of a logical topic."""
        return dict(self.topics)[logical]

    def detector_config(self):  # type: ignore[no-untyped-def]
        from .detectors import DetectorConfig

        return dataclasses.replace(DetectorConfig(), **dict(self.detect_overrides))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise ConfigError on a bad value."""
        env = os.environ if environ is None else environ
        kw: dict[str, object] = {}
        broker = env.get("STREAMPROC_BROKER", "").strip()
        if broker:
            for part in broker.split(","):
                host, _, port = part.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise ConfigError(
                        f"STREAMPROC_BROKER={broker!r}: expected host:port[,host:port...], e.g. localhost:9092")
            kw["broker"] = broker
        for var, (name, lo, hi) in _INT_VARS.items():
            if var in env:
                kw[name] = _int(env, var, lo, hi)
        win = {}
        for var, (name, lo, hi) in _WINDOW_VARS.items():
            if var in env:
                win[name] = _int(env, var, lo, hi)
        if win:
            kw["window"] = WindowSpec(**win)
        store = env.get("STREAMPROC_STORE")
        if store is not None:
            if store not in ("memory://", "rocksdb://"):
                raise ConfigError(f"STREAMPROC_STORE={store!r}: use memory:// (demo, tests) or rocksdb:// (production)")
            kw["store"] = store
        urls = env.get("STREAMPROC_WEBHOOK_URLS", "").strip()
        if urls:
            parsed = tuple(u.strip() for u in urls.split(",") if u.strip())
            for u in parsed:
                pu = urlparse(u)
                if pu.scheme not in ("http", "https") or not pu.netloc:
                    raise ConfigError(f"STREAMPROC_WEBHOOK_URLS: {u!r} is not an http(s) URL; e.g. http://localhost:9000/hook")
            kw["webhook_urls"] = parsed
        for var, name in (("STREAMPROC_WEBHOOK_SECRET", "webhook_secret"), ("STREAMPROC_MODEL_DIR", "model_dir"),
                          ("STREAMPROC_APP_ID", "app_id"), ("STREAMPROC_WEB_HOST", "web_host"),
                          ("STREAMPROC_WEB_BIND", "web_bind"), ("STREAMPROC_DATA_DIR", "data_dir")):
            if env.get(var):
                kw[name] = env[var]
        level = env.get("STREAMPROC_LOG_LEVEL")
        if level is not None:
            if level not in ("crit", "error", "warn", "info", "debug"):
                raise ConfigError(f"STREAMPROC_LOG_LEVEL={level!r}: use one of crit, error, warn, info, debug")
            kw["log_level"] = level
        topics = []
        for t in TOPICS:
            var = f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}"
            name = env.get(var, t).strip()
            if not name or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" for c in name):
                raise ConfigError(f"{var}={name!r}: topic names use letters, digits, '.', '_' and '-'")
            topics.append((t, name))
        kw["topics"] = tuple(topics)
        kw["detect_overrides"] = _detect_overrides(env)
        return cls(**kw)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], var: str, lo: int, hi: int) -> int:
    raw = env[var].strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r}: expected an integer between {lo} and {hi}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{var}={value}: must be between {lo} and {hi}")
    return value


def _detect_overrides(env: Mapping[str, str]) -> tuple[tuple[str, float], ...]:
    from .detectors import DetectorConfig

    fields = {f.name: f for f in dataclasses.fields(DetectorConfig)}
    out = []
    for var, raw in env.items():
        if not var.startswith("STREAMPROC_DETECT_"):
            continue
        name = var[len("STREAMPROC_DETECT_"):].lower()
        if name not in fields:
            raise ConfigError(f"{var}: unknown detector setting; known: "
                              + ", ".join("STREAMPROC_DETECT_" + n.upper() for n in fields))
        default = getattr(DetectorConfig(), name)
        try:
            value = type(default)(raw) if not isinstance(default, bool) else raw.lower() in ("1", "true", "yes")
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: expected a {type(default).__name__} like {default!r}") from None
        out.append((name, value))
    return tuple(sorted(out))


ENV_VARS = _env_list()
