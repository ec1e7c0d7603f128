"""``streamproc backtest``: run the live surge/drop detector over a historical count series.

Each CSV row is one bucket; the bucket length is the median spacing of the timestamps. Output is
one CSV row per input row, ``timestamp,value,expected,score,alert`` and the forecaster's columns
``forecast_next,forecast_next_low,forecast_next_high,forecast_1h,forecast_1h_low,forecast_1h_high``
(made after the row: the next bucket's count and the next hour's total, each with its 80% interval;
:mod:`streamproc.forecast`), with the timestamp exactly as read and ``alert`` = 1 only on the row where
an incident fires (NAB counts a detection per row).
Rows are fed in file order; gaps are not filled (a missing row is not a zero bucket).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from . import forecast
from .detectors import HOUR_MS, DetectorConfig, new_state, step
from .progress import bar

__all__ = ["BacktestInputError", "BacktestRow", "parse_ts_ms", "run_backtest", "backtest_main", "read_series"]

OUTPUT_COLUMNS = ("timestamp", "value", "expected", "score", "alert", "forecast_next", "forecast_next_low",
                  "forecast_next_high", "forecast_1h", "forecast_1h_low", "forecast_1h_high")
DEFAULT_STEP_MS = 60_000


class BacktestInputError(ValueError):
    """The input CSV cannot be used (missing file or column, bad value); the message says which."""


@dataclass(frozen=True)
class BacktestRow:
    """One output row."""

    timestamp: str
    """The input timestamp, unchanged."""
    value: float
    """The input count."""
    expected: float
    """What the detector expected for this bucket before seeing it."""
    score: float
    """Anomaly score in [0, 1]."""
    alert: int
    """1 on the bucket where an incident (surge or drop) fires, else 0."""
    kind: str | None = None
    """"demand_surge" | "demand_drop" on alert rows."""
    next: forecast.Forecast = forecast.Forecast(0.0, 0.0, 0.0)
    """Forecast of the next bucket's count, made after this row."""
    hour: forecast.Forecast = forecast.Forecast(0.0, 0.0, 0.0)
    """Forecast of the next hour's total, made after this row."""


def parse_ts_ms(text: str) -> int:
    """Epoch milliseconds from ISO 8601 / RFC 3339 (naive means UTC) or epoch seconds / milliseconds."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        n = int(t)
        return n if abs(n) > 10**11 else n * 1000
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise BacktestInputError(f"unreadable timestamp {text!r}; use ISO 8601 or epoch seconds/ms") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


def _step_ms(ts: list[int]) -> int:
    diffs = sorted(b - a for a, b in zip(ts, ts[1:], strict=False) if b > a)
    return diffs[len(diffs) // 2] if diffs else DEFAULT_STEP_MS


def run_backtest(rows: Iterable[tuple[str, float]], cfg: DetectorConfig, *, progress: bool = False,
                 forecasts: bool = True) -> list[BacktestRow]:
    """Run one detector over ``(timestamp, count)`` rows in order; one :class:`BacktestRow` each.
    ``progress``: a bar on stderr. ``forecasts=False`` skips the forecaster (zero forecast fields)."""
    data = list(rows)
    ts = [parse_ts_ms(t) for t, _ in data]
    step_ms = _step_ms(ts)
    state = new_state(cfg)
    fc, fc_cfg = forecast.ForecastState(), forecast.ForecastConfig()
    h1 = max(1, round(HOUR_MS / step_ms))
    out = []
    for (raw_ts, value), ts_ms in bar(zip(data, ts, strict=True), enabled=progress, desc="backtest", unit="row",
                                      total=len(data)):
        d = step(state, value, ts_ms, step_ms, cfg)
        fired = d.transition == "firing"
        nxt = hour = forecast.Forecast(0.0, 0.0, 0.0)
        if forecasts:
            forecast.update(fc, value, ts_ms, step_ms, state, cfg, fc_cfg)
            nxt = forecast.predict(fc, 1, ts_ms + step_ms, step_ms, state, cfg)
            hour = forecast.predict(fc, h1, ts_ms + step_ms, step_ms, state, cfg)
        out.append(BacktestRow(raw_ts, value, d.expected, d.score, int(fired), d.kind if fired else None, nxt, hour))
    return out


def read_series(csv_path: str | Path, time_col: str, value_col: str) -> list[tuple[str, float]]:
    """The ``(timestamp, value)`` pairs of a CSV file; raises :class:`BacktestInputError` on bad input."""
    path = Path(csv_path)
    if not path.is_file():
        raise BacktestInputError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in (time_col, value_col):
            if col not in header:
                raise BacktestInputError(f"{path}: no column {col!r} (columns: {', '.join(header) or 'none'})")
        rows = []
        for line, rec in enumerate(reader, start=2):
            raw = (rec.get(value_col) or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise BacktestInputError(f"{path}:{line}: {value_col} {raw!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise BacktestInputError(f"{path}:{line}: {value_col} {raw!r} is not a count (finite, >= 0)")
            rows.append((rec[time_col], value))
    return rows


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def summary(results: list[BacktestRow], seconds: float) -> str:
    """One line for a person: rows, alerts by kind, time taken."""
    kinds = [r.kind for r in results if r.alert]
    surges, drops = kinds.count("demand_surge"), kinds.count("demand_drop")
    return (f"backtest: {len(results):,} rows, {len(kinds)} alerts ({surges} surge, {drops} drop) "
            f"in {seconds:.2f} s")


def backtest_main(csv_path: str | Path, time_col: str, value_col: str, signal: str, out: TextIO,
                  cfg: DetectorConfig | None = None, *, progress: bool = False, report: TextIO | None = None,
                  plot: str | Path | None = None) -> int:
    """Read ``csv_path``, run the detector and write the :data:`OUTPUT_COLUMNS` to ``out``.

    ``signal`` names the series (orders or clicks); both use the same detector settings. ``progress``
    shows a bar on stderr; ``report`` gets a one-line summary; ``plot`` also draws the backtest into
    this image file (needs matplotlib). Returns 0."""
    del signal  # one detector configuration for every signal
    started = time.monotonic()
    rows = read_series(csv_path, time_col, value_col)
    results = run_backtest(rows, cfg or DetectorConfig(), progress=progress)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    for r in results:
        value = str(int(r.value)) if r.value.is_integer() else _fmt(r.value)
        writer.writerow((r.timestamp, value, _fmt(r.expected), _fmt(r.score), r.alert,
                         *(_fmt(v) for f in (r.next, r.hour) for v in (f.expected, f.low, f.high))))
    if plot is not None:
        from .backtest_plot import plot_backtest

        plot_backtest(results, [parse_ts_ms(r.timestamp) for r in results], plot, title=Path(csv_path).name)
    if report is not None:
        print(summary(results, time.monotonic() - started), file=report)
    return 0
