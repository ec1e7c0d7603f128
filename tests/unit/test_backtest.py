"""``streamproc backtest``: CSV in, detector over it, CSV out."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from streamproc.backtest import BacktestInputError, backtest_main, parse_ts_ms, run_backtest
from streamproc.detectors import DetectorConfig


def write_series(path: Path, values: list[float], *, header: str = "timestamp,value") -> list[str]:
    """A 5-minute series starting 2015-03-01 00:00:00 (NAB's timestamp format)."""
    t0 = np.datetime64("2015-03-01T00:00:00")
    stamps = [str(t0 + np.timedelta64(5 * i, "m")).replace("T", " ") for i in range(len(values))]
    with path.open("w", newline="") as fh:
        fh.write(header + "\n")
        for ts, v in zip(stamps, values, strict=True):
            fh.write(f"{ts},{v:g}\n")
    return stamps


def surge_series() -> list[float]:
    rng = np.random.default_rng(0)
    return [float(v) for v in np.concatenate([rng.poisson(8, 3 * 288), rng.poisson(60, 12), rng.poisson(8, 60)])]


def test_backtest_writes_the_columns_and_alerts_only_on_the_firing_row(tmp_path: Path) -> None:
    values = surge_series()
    stamps = write_series(tmp_path / "s.csv", values)
    out = io.StringIO()
    assert backtest_main(tmp_path / "s.csv", "timestamp", "value", "orders", out) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["timestamp", "value", "expected", "score", "alert", "forecast_next", "forecast_next_low",
                             "forecast_next_high", "forecast_1h", "forecast_1h_low", "forecast_1h_high"]
    assert [r["timestamp"] for r in rows] == stamps
    assert [float(r["value"]) for r in rows] == values
    alerts = [i for i, r in enumerate(rows) if r["alert"] == "1"]
    assert len(alerts) == 1 and 3 * 288 <= alerts[0] <= 3 * 288 + 2
    assert {r["alert"] for r in rows} == {"0", "1"}
    scores = [float(r["score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[alerts[0]] >= 0.5  # the incident is still firing on the next rows, but alert stays 0
    assert rows[alerts[0] + 1]["alert"] == "0" and float(rows[alerts[0] + 1]["score"]) >= 0.5


def test_run_backtest_in_memory_matches_kinds() -> None:
    values = surge_series()
    t0 = 1_425_168_000_000
    rows = [(str(t0 + i * 300_000), v) for i, v in enumerate(values)]
    result = run_backtest(rows, DetectorConfig())
    assert [r.kind for r in result if r.alert] == ["demand_surge"]
    assert [r.timestamp for r in result] == [t for t, _ in rows]


def test_timestamps_in_several_formats() -> None:
    assert parse_ts_ms("2015-03-01 00:05:00") == 1_425_168_300_000
    assert parse_ts_ms("2015-03-01T01:05:00+01:00") == 1_425_168_300_000
    assert parse_ts_ms("2015-03-01T00:05:00Z") == 1_425_168_300_000
    assert parse_ts_ms("1425168300") == 1_425_168_300_000
    assert parse_ts_ms("1425168300000") == 1_425_168_300_000
    with pytest.raises(BacktestInputError, match="timestamp"):
        parse_ts_ms("yesterday")


def test_input_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(BacktestInputError, match="no such file"):
        backtest_main(tmp_path / "missing.csv", "timestamp", "value", "orders", io.StringIO())
    write_series(tmp_path / "s.csv", [1.0, 2.0])
    with pytest.raises(BacktestInputError, match="no column 'count'"):
        backtest_main(tmp_path / "s.csv", "timestamp", "count", "orders", io.StringIO())
    (tmp_path / "bad.csv").write_text("timestamp,value\n2015-03-01 00:00:00,lots\n")
    with pytest.raises(BacktestInputError, match="not a number"):
        backtest_main(tmp_path / "bad.csv", "timestamp", "value", "orders", io.StringIO())
    assert issubclass(BacktestInputError, ValueError)
