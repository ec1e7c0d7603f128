"""Sentiment and negative-review spike settings: defaults, good values, and bad values that stop start-up
with a one-line message naming the variable."""

from __future__ import annotations

import pytest

from streamproc.cli import main
from streamproc.errors import ConfigError
from streamproc.review_spikes import ReviewSpikeConfig
from streamproc.settings import ENV_VARS, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.sentiment_batch, s.sentiment_wait_ms, s.sentiment_threads) == (64, 50, None)
    assert s.review_spike_config() == ReviewSpikeConfig()
    assert {"STREAMPROC_SENTIMENT_BATCH", "STREAMPROC_SENTIMENT_WAIT_MS", "STREAMPROC_SENTIMENT_THREADS"} <= set(ENV_VARS)


def test_good_values_are_taken() -> None:
    s = Settings.from_env({"STREAMPROC_SENTIMENT_BATCH": "16", "STREAMPROC_SENTIMENT_WAIT_MS": "0",
                           "STREAMPROC_SENTIMENT_THREADS": "1", "STREAMPROC_REVIEW_SPIKE_WINDOWS_MS": "600000, 1800000",
                           "STREAMPROC_REVIEW_SPIKE_MIN_NEGATIVE": "8", "STREAMPROC_REVIEW_SPIKE_Z": "2.33"})
    assert (s.sentiment_batch, s.sentiment_wait_ms, s.sentiment_threads) == (16, 0, 1)
    cfg = s.review_spike_config()
    assert cfg.windows_ms == (600_000, 1_800_000) and cfg.min_negative == 8 and cfg.z == 2.33
    assert cfg.fire_margin == ReviewSpikeConfig().fire_margin


@pytest.mark.parametrize(("env", "match"), [
    ({"STREAMPROC_SENTIMENT_BATCH": "0"}, "STREAMPROC_SENTIMENT_BATCH=0: must be between 1 and"),
    ({"STREAMPROC_SENTIMENT_WAIT_MS": "fast"}, "STREAMPROC_SENTIMENT_WAIT_MS='fast': expected an integer"),
    ({"STREAMPROC_SENTIMENT_THREADS": "0"}, "STREAMPROC_SENTIMENT_THREADS=0"),
    ({"STREAMPROC_REVIEW_SPIKE_WINDOWS_MS": "7200000"}, "WINDOWS_MS.*at most|1 h"),
    ({"STREAMPROC_REVIEW_SPIKE_WINDOWS_MS": "30000"}, "at least a bucket"),
    ({"STREAMPROC_REVIEW_SPIKE_WINDOWS_MS": "5m"}, "expected a tuple like 300000,900000,3600000"),
    ({"STREAMPROC_REVIEW_SPIKE_PRIOR_SHARE": "1.5"}, "PRIOR_SHARE.*in \\[0, 1\\]"),
    ({"STREAMPROC_REVIEW_SPIKE_RESOLVE_MARGIN": "0.5"}, "must not exceed fire_margin"),
    ({"STREAMPROC_REVIEW_SPIKE_FIRE_MARGIN": "0.04"}, "must not exceed fire_margin"),
    ({"STREAMPROC_REVIEW_SPIKE_THRESHOLD": "3"}, "unknown review spike setting; known: .*STREAMPROC_REVIEW_SPIKE_Z"),
])
def test_bad_values_fail_with_the_variable_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as exc:
        Settings.from_env(env)
    assert "\n" not in str(exc.value)


def test_the_command_exits_2_on_a_bad_sentiment_setting(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMPROC_SENTIMENT_BATCH", "-3")
    assert main(["score", "hello"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "STREAMPROC_SENTIMENT_BATCH" in err
