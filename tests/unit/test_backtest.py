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


def test_forecast_columns_are_ordered_intervals_that_follow_the_series(tmp_path: Path) -> None:
    values = surge_series()
    write_series(tmp_path / "s.csv", values)
    out = io.StringIO()
    backtest_main(tmp_path / "s.csv", "timestamp", "value", "orders", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    for r in rows[300:]:
        assert float(r["forecast_next_low"]) <= float(r["forecast_next"]) <= float(r["forecast_next_high"])
        assert float(r["forecast_1h_low"]) <= float(r["forecast_1h"]) <= float(r["forecast_1h_high"])
    assert float(rows[800]["forecast_next"]) == pytest.approx(8, rel=0.35)
    assert float(rows[800]["forecast_1h"]) == pytest.approx(96, rel=0.35)


def test_plot_draws_an_image(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_series(tmp_path / "s.csv", surge_series())
    png = tmp_path / "out.png"
    backtest_main(tmp_path / "s.csv", "timestamp", "value", "orders", io.StringIO(), plot=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_backtest_without_plot_never_imports_matplotlib(tmp_path: Path) -> None:
    import subprocess
    import sys

    write_series(tmp_path / "s.csv", surge_series()[:400])
    code = ("import sys, io; from streamproc import cli; "
            f"cli.main(['backtest', '--csv', {str(tmp_path / 's.csv')!r}, '--time-col', 'timestamp', "
            "'--value-col', 'value']); print('matplotlib' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().endswith("False")


def test_plot_without_matplotlib_is_a_one_line_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from streamproc.errors import ConfigError

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    write_series(tmp_path / "s.csv", surge_series()[:100])
    with pytest.raises(ConfigError, match=r"pip install 'streamproc\[plot\]'"):
        backtest_main(tmp_path / "s.csv", "timestamp", "value", "orders", io.StringIO(), plot=tmp_path / "x.png")
