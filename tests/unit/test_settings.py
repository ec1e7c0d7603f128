"""Configuration from the environment: defaults, renames, and bad values that stop start-up with a message
naming the variable (``Settings.from_env`` takes a dict; only the CLI tests touch the real environment)."""

from __future__ import annotations

import pytest

from streamproc.cli import main
from streamproc.detectors import DetectorConfig
from streamproc.errors import ConfigError
from streamproc.settings import ENV_VARS, TOPICS, Settings
from streamproc.windows import WindowSpec


def test_empty_environment_gives_the_documented_defaults() -> None:
    s = Settings.from_env({})
    assert s.broker is None  # embedded broker
    assert s.web_port == 6066
    assert s.store == "memory://"
    assert s.webhook_urls == () and s.webhook_secret is None
    assert s.model_dir is None
    assert s.window == WindowSpec()
    assert s.detector_config() == DetectorConfig()
    assert {logical: s.topic(logical) for logical in TOPICS} == {t: t for t in TOPICS}
    assert s == Settings()


def test_from_env_does_not_read_the_process_environment_when_given_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_WEB_PORT", "70000")
    assert Settings.from_env({}).web_port == 6066


def test_good_values_are_taken() -> None:
    s = Settings.from_env({
        "STREAMPROC_BROKER": "kafka-1:9092,kafka-2:9093",
        "STREAMPROC_WEB_PORT": "8080",
        "STREAMPROC_STORE": "rocksdb://",
        "STREAMPROC_WEBHOOK_URLS": "http://localhost:9000/hook, https://hooks.example.com/a",
        "STREAMPROC_WEBHOOK_SECRET": "s3cret",
        "STREAMPROC_BUCKET_MS": "300000",
        "STREAMPROC_GRACE_MS": "10000",
        "STREAMPROC_DETECT_SURGE_RATIO": "4",
        "STREAMPROC_DETECT_PENDING_STEPS": "2",
    })
    assert s.broker == "kafka-1:9092,kafka-2:9093"
    assert s.web_port == 8080
    assert s.store == "rocksdb://"
    assert s.webhook_urls == ("http://localhost:9000/hook", "https://hooks.example.com/a")
    assert s.webhook_secret == "s3cret"
    assert s.window.bucket_ms == 300_000 and s.window.grace_ms == 10_000
    assert s.window.allowed_lateness_ms == WindowSpec().allowed_lateness_ms  # others keep defaults
    cfg = s.detector_config()
    assert cfg.surge_ratio == 4.0 and cfg.pending_steps == 2
    assert cfg.threshold_nats == DetectorConfig().threshold_nats


def test_secret_is_not_shown_in_repr() -> None:
    assert "s3cret" not in repr(Settings.from_env({"STREAMPROC_WEBHOOK_SECRET": "s3cret"}))


def test_topics_can_be_renamed_one_by_one() -> None:
    s = Settings.from_env({"STREAMPROC_TOPIC_CLICKS": "shop.clicks.v2",
                           "STREAMPROC_TOPIC_PRODUCT_FEATURES": "features_compacted",
                           "STREAMPROC_TOPIC_DEAD_LETTERS": "dlq"})
    assert s.topic("clicks") == "shop.clicks.v2"
    assert s.topic("product-features") == "features_compacted"
    assert s.topic("dead-letters") == "dlq"
    assert s.topic("orders") == "orders"


def test_every_topic_has_a_rename_variable() -> None:
    for t in TOPICS:
        assert f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}" in ENV_VARS


BAD = [
    ("STREAMPROC_WEB_PORT", "70000"),
    ("STREAMPROC_WEB_PORT", "-1"),
    ("STREAMPROC_WEB_PORT", "http"),
    ("STREAMPROC_STORE", "foo"),
    ("STREAMPROC_STORE", "rocksdb"),
    ("STREAMPROC_WEBHOOK_URLS", "localhost:9000/hook"),
    ("STREAMPROC_WEBHOOK_URLS", "http://ok.example/a,ftp://files.example/b"),
    ("STREAMPROC_WEBHOOK_URLS", "http://"),
    ("STREAMPROC_BROKER", "localhost"),
    ("STREAMPROC_BROKER", "localhost:ninety"),
    ("STREAMPROC_BROKER", "kafka:9092,:9093"),
    ("STREAMPROC_DETECT_X", "1"),
    ("STREAMPROC_DETECT_SURGE_RATIO", "lots"),
    ("STREAMPROC_DETECT_PENDING_STEPS", "1.5"),
    ("STREAMPROC_BUCKET_MS", "abc"),
    ("STREAMPROC_BUCKET_MS", "10"),
    ("STREAMPROC_IDLE_TIMEOUT_MS", "1e3"),
    ("STREAMPROC_MAX_RECORD_BYTES", "0"),
    ("STREAMPROC_LOG_LEVEL", "verbose"),
    ("STREAMPROC_TOPIC_CLICKS", "my clicks"),
    ("STREAMPROC_TOPIC_ALERTS", "  "),
    ("STREAMPROC_REPLICATION_FACTOR", "0"),
    ("STREAMPROC_REPLICATION_FACTOR", "three"),
]


def test_replication_factor_defaults_to_1_and_reaches_every_topic_streamproc_creates() -> None:
    from streamproc.broker import topic_specs

    assert Settings.from_env({}).replication_factor == 1
    s = Settings.from_env({"STREAMPROC_REPLICATION_FACTOR": "3", "STREAMPROC_APP_ID": "shop"})
    specs = topic_specs(s)
    assert {rf for *_rest, rf in specs} == {3}
    assert {"shop-order-items", "shop-silences"} <= {name for name, *_ in specs}


@pytest.mark.parametrize(("var", "value"), BAD)
def test_bad_value_raises_config_error_naming_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: value})
    message = str(info.value)
    assert var in message
    assert "\n" not in message  # one line


@pytest.mark.parametrize(("var", "value"), [
    ("STREAMPROC_DETECT_SURGE_RATIO", "0.5"),   # must be > 1
    ("STREAMPROC_DETECT_DROP_RATIO", "2"),      # must be in (0, 1)
    ("STREAMPROC_DETECT_PENDING_STEPS", "0"),   # must be >= 1
    ("STREAMPROC_DETECT_THRESHOLD_NATS", "-3"),
])
def test_detector_value_out_of_range_fails_at_start_up(var: str, value: str) -> None:
    # Not later, when the worker first builds its detectors.
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: value})
    assert var in str(info.value)


def test_unknown_detector_setting_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"STREAMPROC_DETECT_SURGE": "3"})
    assert "STREAMPROC_DETECT_SURGE_RATIO" in str(info.value)


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/bin", "STREAMPROCX": "1", "KAFKA_BROKER": "nope"}) == Settings()


# -- the command line ----------------------------------------------------------------------------


def test_cli_exits_2_with_the_reason_for_a_bad_env_var(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMPROC_BROKER", "127.0.0.1:1")  # never start an embedded broker from a unit test
    monkeypatch.setenv("STREAMPROC_WEB_PORT", "70000")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "STREAMPROC_WEB_PORT" in err


def test_cli_exits_2_for_a_bad_detector_value(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMPROC_BROKER", "127.0.0.1:1")  # never start an embedded broker from a unit test
    monkeypatch.setenv("STREAMPROC_DETECT_SURGE_RATIO", "0.5")
    assert main(["worker"]) == 2
    assert "STREAMPROC_DETECT_SURGE_RATIO" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],                                    # no command
    ["frobnicate"],                        # unknown command
    ["generate"],                          # missing required options
    ["generate", "--rate", "fast", "--duration", "1"],
    ["demo", "--duration"],                # option without its value
    ["backtest", "--csv", "x.csv", "--time-col", "t", "--value-col", "v", "--signal", "reviews"],
])
def test_cli_exits_2_for_bad_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "streamproc" in capsys.readouterr().err


def test_cli_exits_2_for_bad_generate_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # Checked before any broker is started or contacted.
    monkeypatch.setenv("STREAMPROC_BROKER", "localhost:1")
    assert main(["generate", "--rate", "0", "--duration", "1"]) == 2
