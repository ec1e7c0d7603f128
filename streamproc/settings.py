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
from .webhooks import receiver_options
from .windows import WindowSpec

__all__ = ["Settings", "TOPICS", "INPUT_TOPICS", "ENV_VARS", "SECRET_ENV_VARS", "WEBHOOK_FORMAT_PREFIXES"]

#: ``STREAMPROC_WEBHOOK_URLS`` entries starting with one of these get Alertmanager-format payloads.
WEBHOOK_FORMAT_PREFIXES = ("am+", "alertmanager+", "native+")

#: Logical topic names; ``STREAMPROC_TOPIC_<NAME>`` (upper case, ``-`` as ``_``) renames each.
TOPICS = ("clicks", "orders", "reviews", "alerts", "scored-reviews", "product-features", "dead-letters",
          "marketing-triggers", "customer-features")
INPUT_TOPICS = ("clicks", "orders", "reviews")

_INT_VARS = {
    "STREAMPROC_WEB_PORT": ("web_port", 0, 65535),
    # The HTTP read side (README, "HTTP API"): snapshot age, concurrent requests, event streams.
    "STREAMPROC_WEB_SNAPSHOT_MAX_AGE_MS": ("web_snapshot_max_age_ms", 0, 3_600_000),
    "STREAMPROC_WEB_MAX_CONCURRENT": ("web_max_concurrent", 1, 100_000),
    "STREAMPROC_WEB_QUEUE_WAIT_MS": ("web_queue_wait_ms", 0, 600_000),
    "STREAMPROC_WEB_CPU_PERCENT": ("web_cpu_percent", 1, 100),
    "STREAMPROC_WEB_MAX_STREAMS": ("web_max_streams", 0, 100_000),
    "STREAMPROC_PARTITIONS": ("partitions", 1, 10_000),
    "STREAMPROC_REPLICATION_FACTOR": ("replication_factor", 1, 32_767),
    "STREAMPROC_MAX_RECORD_BYTES": ("max_record_bytes", 64, 100 << 20),
    "STREAMPROC_FEATURE_MAX_AGE_MS": ("feature_max_age_ms", 1, 10**12),
    "STREAMPROC_BATCH_SIZE": ("batch_size", 1, 1_000_000),
    "STREAMPROC_WEBHOOK_TIMEOUT_MS": ("webhook_timeout_ms", 1, 10**9),
    "STREAMPROC_WEBHOOK_MAX_COPIES": ("webhook_max_copies", 1, 1000),
    # Duplicate ids (README, "Guarantees"); 0 turns the check off.
    "STREAMPROC_DEDUP_HORIZON_MS": ("dedup_horizon_ms", 0, 7 * 86_400_000),
    "STREAMPROC_DEDUP_MAX_IDS": ("dedup_max_ids", 1, 100_000_000),
    # Products held as objects (docs/how-it-works.md, "Parked products"); 0 = no cap.
    "STREAMPROC_MAX_PRODUCTS_IN_MEMORY": ("max_products_in_memory", 0, 100_000_000),
    # Alert delivery (docs/alert-delivery.md).
    "STREAMPROC_WEBHOOK_GROUP_WAIT_MS": ("webhook_group_wait_ms", 0, 3_600_000),
    "STREAMPROC_WEBHOOK_MAX_ALERTS": ("webhook_max_alerts", 1, 10_000),
    "STREAMPROC_WEBHOOK_DEADLINE_MS": ("webhook_deadline_ms", 1_000, 7 * 86_400_000),
    "STREAMPROC_WEBHOOK_BACKOFF_MS": ("webhook_backoff_ms", 1, 3_600_000),
    "STREAMPROC_WEBHOOK_MAX_BACKOFF_MS": ("webhook_max_backoff_ms", 1, 86_400_000),
    "STREAMPROC_WEBHOOK_SEND_INHIBITED": ("webhook_send_inhibited", 0, 1),
    "STREAMPROC_CATEGORY_WARMUP_MS": ("category_warmup_ms", 0, 10**11),
    "STREAMPROC_ALERT_REPEAT_INTERVAL_MS": ("alert_repeat_interval_ms", 1_000, 30 * 86_400_000),
    "STREAMPROC_ALERT_PENDING_MS": ("alert_pending_ms", 0, 86_400_000),
    "STREAMPROC_ALERT_KEEP_FIRING_MS": ("alert_keep_firing_ms", 0, 86_400_000),
    # Review sentiment in the stream (README, "Sentiment").
    "STREAMPROC_SENTIMENT_BATCH": ("sentiment_batch", 1, 4096),
    "STREAMPROC_SENTIMENT_WAIT_MS": ("sentiment_wait_ms", 0, 60_000),
    "STREAMPROC_SENTIMENT_THREADS": ("sentiment_threads", 1, 256),
    # Customer features and marketing triggers (docs/customers.md).
    "STREAMPROC_CART_ABANDON_MS": ("cart_abandon_ms", 60_000, 30 * 86_400_000),
    "STREAMPROC_CUSTOMERS": ("customers", 0, 1),
    "STREAMPROC_CUSTOMER_RETENTION_MS": ("customer_retention_ms", 86_400_000, 3_650 * 86_400_000),
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
             "STREAMPROC_LOG_LEVEL", "STREAMPROC_LOG_FORMAT", "STREAMPROC_WEB_BIND", "STREAMPROC_WEBHOOK_EXTERNAL_URL"]
    names += list(_INT_VARS) + list(_WINDOW_VARS)
    names += [f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}" for t in TOPICS]
    names += list(_SECURITY_VARS)
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
    web_snapshot_max_age_ms: int = 1_000
    """``/trending``, ``/alerts``, ``/dashboard/state`` and ``/metrics`` are served from a snapshot at most this
    old (or ten times its build time, when that is longer): read_model.py."""
    web_max_concurrent: int = 64
    """HTTP requests handled at once (``/healthz`` and ``/readyz`` not counted); the others wait for a turn ..."""
    web_queue_wait_ms: int = 5_000
    """... at most this long, then get 503 with ``Retry-After``."""
    web_cpu_percent: int = 50
    """The HTTP server thread's CPU budget, percent of one core (health checks not counted); 100 = none."""
    web_max_streams: int = 100
    """Open ``/events/stream`` connections; more get 503."""
    store: str = "memory://"
    data_dir: str = "./streamproc-data"
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout_ms: int = 10_000
    """Per-request timeout of a webhook POST (a receiver's URL may set its own: ``#timeout_ms=N``)."""
    webhook_max_copies: int = 3
    """POSTs of one batch that may have reached a receiver without an answer (timeouts, dropped connections)
    before the batch is dead-lettered (a receiver's URL may set its own: ``#max_copies=N``)."""
    webhook_group_wait_ms: int = 5_000
    """Alerts arriving within this long of the first undelivered one go out in one POST per receiver."""
    webhook_max_alerts: int = 100
    """At most this many alerts per webhook POST."""
    webhook_deadline_ms: int = 3_600_000
    """Retry a delivery until this long after the alert was published, then dead-letter it."""
    webhook_backoff_ms: int = 500
    """First retry delay (doubling each attempt, with jitter)."""
    webhook_max_backoff_ms: int = 60_000
    """Longest retry delay (a longer ``Retry-After`` is still honoured)."""
    webhook_send_inhibited: int = 0
    category_warmup_ms: int = 86_400_000
    """History a category needs before its surges alert. Kept apart from STREAMPROC_DETECT_WARMUP_MS: a
    category sums many products, so its daily cycle must be learnt before a morning ramp reads as a surge."""
    """1: also page for product alerts inhibited by a category alert."""
    webhook_external_url: str | None = None
    """``externalURL`` in Alertmanager-format payloads (default: this worker's web address)."""
    alert_repeat_interval_ms: int = 4 * 3_600_000
    """Re-notify a still-firing incident after this long (wall clock)."""
    alert_pending_ms: int | None = None
    """Event time a condition must hold before firing (rounded up to buckets; default: the detector's)."""
    alert_keep_firing_ms: int | None = None
    """Event time a condition must stay clear before resolving (rounded up to buckets; default: the detector's)."""
    model_dir: str | None = None
    """Sentiment model directory; None: the packaged model."""
    sentiment_batch: int = 64
    """The reviews agent scores up to this many reviews at a time ..."""
    sentiment_wait_ms: int = 50
    """... or what arrived within this long."""
    sentiment_threads: int | None = None
    """onnxruntime intra-op threads; None: min(2, CPUs)."""
    review_spike_overrides: tuple[tuple[str, object], ...] = ()
    """``STREAMPROC_REVIEW_SPIKE_<FIELD>`` overrides of the negative-review spike test's defaults."""
    partitions: int = 4
    """Partitions of the topics streamproc creates (all input topics get the same count)."""
    replication_factor: int = 1
    """Replication factor of every topic streamproc or Faust creates (at most the number of brokers)."""
    max_record_bytes: int = 1 << 20
    dedup_horizon_ms: int = 300_000
    """A click/order/review id seen again on its input partition within this much event time behind the
    partition's newest event is dropped as a duplicate (0: no check)."""
    dedup_max_ids: int = 500_000
    max_products_in_memory: int = 200_000
    """Cap on products held as objects; past it the least recently active are parked with closes still due
    (they catch up, with the same outputs, when touched or a few buckets later)."""
    """Ids remembered for the duplicate check, per worker (the oldest are forgotten first)."""
    cart_abandon_ms: int = 3_600_000
    customers: int = 1
    """1: customer features and marketing triggers (docs/customers.md); 0: the product side only."""
    """``cart_abandoned`` when no order follows a carting session's last click within this much event time."""
    customer_retention_ms: int = 90 * 86_400_000
    """A customer inactive this long (event time) is forgotten; erasure markers are kept this long."""
    feature_max_age_ms: int = 600_000
    """Features not recomputed for this long (wall clock) are served as OUTSIDE_MAX_AGE."""
    batch_size: int = 2_000
    log_level: str = "warn"
    log_format: str = "text"
    """``text`` (human-readable) or ``json`` (one JSON object per line, for log shippers)."""
    window: WindowSpec = WindowSpec()
    detect_overrides: tuple[tuple[str, float], ...] = ()
    """``STREAMPROC_DETECT_<FIELD>`` overrides of the detector defaults."""
    topics: tuple[tuple[str, str], ...] = tuple((t, t) for t in TOPICS)
    # Security (docs in the README, "Security"); applied by kafka_auth.py and web_auth.py.
    kafka_security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL: how every Kafka client of streamproc connects."""
    kafka_sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols; default PLAIN)."""
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    """PEM file of the CA that signed the brokers' certificates (default: the system CAs)."""
    kafka_ssl_certfile: str | None = None
    """PEM client certificate (mutual TLS)."""
    kafka_ssl_keyfile: str | None = None
    """PEM private key of the client certificate."""
    kafka_ssl_key_password: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    """When set, HTTP write requests (POST/PUT/PATCH/DELETE) need ``Authorization: Bearer <token>``."""

    def topic(self, logical: str) -> str:
        """The real name of a logical topic."""
        return dict(self.topics)[logical]

    def review_spike_config(self):  # type: ignore[no-untyped-def]
        from .review_spikes import ReviewSpikeConfig

        return dataclasses.replace(ReviewSpikeConfig(), **dict(self.review_spike_overrides))

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
                pu = urlparse(u.split("+", 1)[1] if u.startswith(WEBHOOK_FORMAT_PREFIXES) else u)
                if pu.scheme not in ("http", "https") or not pu.netloc:
                    raise ConfigError(f"STREAMPROC_WEBHOOK_URLS: {u!r} is not an http(s) URL, optionally prefixed "
                                  "am+ (Alertmanager format); e.g. http://localhost:9000/hook,am+http://am:9093/hook")
                try:
                    receiver_options(pu.fragment)
                except ValueError as exc:
                    raise ConfigError(f"STREAMPROC_WEBHOOK_URLS: {u!r}: {exc}; e.g. "
                                      "http://localhost:9000/hook#timeout_ms=30000&max_copies=2") from None
            kw["webhook_urls"] = parsed
        for var, name in (("STREAMPROC_WEBHOOK_SECRET", "webhook_secret"), ("STREAMPROC_MODEL_DIR", "model_dir"),
                          ("STREAMPROC_APP_ID", "app_id"), ("STREAMPROC_WEB_HOST", "web_host"),
                          ("STREAMPROC_WEB_BIND", "web_bind"), ("STREAMPROC_DATA_DIR", "data_dir"),
                          ("STREAMPROC_WEBHOOK_EXTERNAL_URL", "webhook_external_url")):
            if env.get(var):
                kw[name] = env[var]
        level = env.get("STREAMPROC_LOG_LEVEL")
        if level is not None:
            if level not in ("crit", "error", "warn", "info", "debug"):
                raise ConfigError(f"STREAMPROC_LOG_LEVEL={level!r}: use one of crit, error, warn, info, debug")
            kw["log_level"] = level
        log_format = env.get("STREAMPROC_LOG_FORMAT")
        if log_format is not None:
            if log_format.strip().lower() not in ("text", "json"):
                raise ConfigError(f"STREAMPROC_LOG_FORMAT={log_format!r}: use json (one JSON object per line) or text")
            kw["log_format"] = log_format.strip().lower()
        topics = []
        for t in TOPICS:
            var = f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}"
            name = env.get(var, t).strip()
            if not name or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" for c in name):
                raise ConfigError(f"{var}={name!r}: topic names use letters, digits, '.', '_' and '-'")
            topics.append((t, name))
        kw["topics"] = tuple(topics)
        kw["detect_overrides"] = _alert_period_overrides(_detect_overrides(env), kw)
        kw["review_spike_overrides"] = _review_spike_overrides(env)
        bucket_ms = kw.get("window", WindowSpec()).bucket_ms  # type: ignore[attr-defined]
        windows = dict(kw["review_spike_overrides"]).get("windows_ms", ())  # type: ignore[call-overload]
        if any(w < bucket_ms for w in windows):
            raise ConfigError(f"STREAMPROC_REVIEW_SPIKE_WINDOWS_MS: each window must be at least a bucket "
                              f"(STREAMPROC_BUCKET_MS={bucket_ms})")
        kw.update(_security(env, has_broker="broker" in kw))
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


def _alert_period_overrides(overrides: tuple[tuple[str, float], ...],
                            kw: Mapping[str, object]) -> tuple[tuple[str, float], ...]:
    """``STREAMPROC_ALERT_PENDING_MS`` / ``_KEEP_FIRING_MS`` as detector steps (buckets, rounded up)."""
    bucket_ms = kw.get("window", WindowSpec()).bucket_ms  # type: ignore[attr-defined]
    out = dict(overrides)
    for ms_field, step_field, var in (("alert_pending_ms", "pending_steps", "STREAMPROC_ALERT_PENDING_MS"),
                                      ("alert_keep_firing_ms", "keep_firing_steps", "STREAMPROC_ALERT_KEEP_FIRING_MS")):
        ms = kw.get(ms_field)
        if ms is None:
            continue
        if step_field in out:
            raise ConfigError(f"{var} and STREAMPROC_DETECT_{step_field.upper()} both set: keep one")
        out[step_field] = max(1, -(-int(ms) // bucket_ms))  # type: ignore[call-overload]
    return tuple(sorted(out.items()))


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
        try:  # range checks live in DetectorConfig; fail here, at start-up, not when the worker builds it
            DetectorConfig(**{name: value})
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r}: {exc}") from None
    return tuple(sorted(out))


def _review_spike_overrides(env: Mapping[str, str]) -> tuple[tuple[str, object], ...]:
    """``STREAMPROC_REVIEW_SPIKE_<FIELD>`` (``WINDOWS_MS`` is a comma-separated list of durations)."""
    from .review_spikes import ReviewSpikeConfig

    prefix = "STREAMPROC_REVIEW_SPIKE_"
    defaults = ReviewSpikeConfig()
    fields = {f.name for f in dataclasses.fields(ReviewSpikeConfig)}
    out: list[tuple[str, object]] = []
    for var, raw in env.items():
        if not var.startswith(prefix):
            continue
        name = var[len(prefix):].lower()
        if name not in fields:
            raise ConfigError(f"{var}: unknown review spike setting; known: "
                              + ", ".join(prefix + n.upper() for n in sorted(fields)))
        default = getattr(defaults, name)
        try:
            value: object = tuple(int(x) for x in raw.split(",") if x.strip()) if isinstance(default, tuple) \
                else type(default)(raw.strip())
        except ValueError:
            like = ",".join(map(str, default)) if isinstance(default, tuple) else repr(default)
            raise ConfigError(f"{var}={raw!r}: expected a {type(default).__name__} like {like}") from None
        out.append((name, value))
        try:  # range checks live in ReviewSpikeConfig; fail here, at start-up
            ReviewSpikeConfig(**{name: value})  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r}: {exc}") from None
    try:
        ReviewSpikeConfig(**dict(out))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"{prefix}*: {exc}") from None
    return tuple(sorted(out))


_SECURITY_VARS = {
    "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "kafka_security_protocol",
    "STREAMPROC_KAFKA_SASL_MECHANISM": "kafka_sasl_mechanism",
    "STREAMPROC_KAFKA_SASL_USERNAME": "kafka_sasl_username",
    "STREAMPROC_KAFKA_SASL_PASSWORD": "kafka_sasl_password",
    "STREAMPROC_KAFKA_SSL_CAFILE": "kafka_ssl_cafile",
    "STREAMPROC_KAFKA_SSL_CERTFILE": "kafka_ssl_certfile",
    "STREAMPROC_KAFKA_SSL_KEYFILE": "kafka_ssl_keyfile",
    "STREAMPROC_KAFKA_SSL_KEY_PASSWORD": "kafka_ssl_key_password",
    "STREAMPROC_API_TOKEN": "api_token",
}
SECRET_ENV_VARS = ("STREAMPROC_WEBHOOK_SECRET", "STREAMPROC_KAFKA_SASL_PASSWORD", "STREAMPROC_KAFKA_SSL_KEY_PASSWORD",
                   "STREAMPROC_API_TOKEN")
"""Variables whose values must never be shown (repr, logs)."""


def _security(env: Mapping[str, str], *, has_broker: bool) -> dict[str, object]:
    """Kafka SASL/TLS and the HTTP API token; combinations that cannot work fail here, at start-up."""
    kw: dict[str, object] = {var_name: env[var] for var, var_name in _SECURITY_VARS.items() if env.get(var)}
    proto = str(kw.get("kafka_security_protocol", "PLAINTEXT")).strip().upper()
    protocols = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    if proto not in protocols:
        raise ConfigError(f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={proto!r}: use one of {', '.join(protocols)}")
    kw["kafka_security_protocol"] = proto
    sasl = [v for v in ("STREAMPROC_KAFKA_SASL_MECHANISM", "STREAMPROC_KAFKA_SASL_USERNAME",
                        "STREAMPROC_KAFKA_SASL_PASSWORD") if env.get(v)]
    tls = [v for v in ("STREAMPROC_KAFKA_SSL_CAFILE", "STREAMPROC_KAFKA_SSL_CERTFILE", "STREAMPROC_KAFKA_SSL_KEYFILE",
                       "STREAMPROC_KAFKA_SSL_KEY_PASSWORD") if env.get(v)]
    if proto != "PLAINTEXT" and not has_broker:
        raise ConfigError(f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={proto}: the embedded broker speaks PLAINTEXT only; "
                          "set STREAMPROC_BROKER=host:port of your Kafka")
    if proto.startswith("SASL_"):
        mech = str(kw.get("kafka_sasl_mechanism", "PLAIN")).strip().upper()
        if mech not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise ConfigError(f"STREAMPROC_KAFKA_SASL_MECHANISM={mech!r}: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
        kw["kafka_sasl_mechanism"] = mech
        if not env.get("STREAMPROC_KAFKA_SASL_USERNAME") or not env.get("STREAMPROC_KAFKA_SASL_PASSWORD"):
            raise ConfigError(f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={proto} needs STREAMPROC_KAFKA_SASL_USERNAME and "
                              "STREAMPROC_KAFKA_SASL_PASSWORD")
    elif sasl:
        raise ConfigError(f"{sasl[0]} is set but STREAMPROC_KAFKA_SECURITY_PROTOCOL={proto}: "
                          "use SASL_SSL (or SASL_PLAINTEXT on a trusted network)")
    if proto in ("SSL", "SASL_SSL"):
        for var in tls:
            if var != "STREAMPROC_KAFKA_SSL_KEY_PASSWORD" and not os.path.isfile(env[var]):
                raise ConfigError(f"{var}={env[var]!r}: no such file; give the path of a PEM file")
        if env.get("STREAMPROC_KAFKA_SSL_KEYFILE") and not env.get("STREAMPROC_KAFKA_SSL_CERTFILE"):
            raise ConfigError("STREAMPROC_KAFKA_SSL_KEYFILE needs STREAMPROC_KAFKA_SSL_CERTFILE (the client certificate)")
        if env.get("STREAMPROC_KAFKA_SSL_KEY_PASSWORD") and not env.get("STREAMPROC_KAFKA_SSL_KEYFILE"):
            raise ConfigError("STREAMPROC_KAFKA_SSL_KEY_PASSWORD needs STREAMPROC_KAFKA_SSL_KEYFILE")
    elif tls:
        raise ConfigError(f"{tls[0]} is set but STREAMPROC_KAFKA_SECURITY_PROTOCOL={proto}: use SSL or SASL_SSL")
    token = env.get("STREAMPROC_API_TOKEN")
    if token is not None and token != "" and (len(token) < 16 or not all(33 <= ord(c) < 127 for c in token)):
        raise ConfigError("STREAMPROC_API_TOKEN: use at least 16 printable ASCII characters without spaces, "
                          "e.g. the output of `openssl rand -hex 32`")
    return kw


ENV_VARS = _env_list()
