"""Progress bars and summaries of the batch commands: on stderr, bars only on a terminal or with --progress,
and stdout stays exactly the command's output."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.loadgen import ProduceReport
from streamproc.progress import wanted


@pytest.fixture
def series(tmp_path: Path) -> Path:
    path = tmp_path / "s.csv"
    rows = [f"{1_700_000_000 + 300 * i},{10 + (i % 5)}" for i in range(400)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    return path


def test_backtest_bar_only_with_progress_and_always_a_summary(series: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["backtest", "--csv", str(series), "--time-col", "timestamp", "--value-col", "value"]
    assert main(args) == 0
    quiet = capsys.readouterr()
    assert "%|" not in quiet.err  # stderr is not a terminal here: no bar
    assert quiet.err.startswith("backtest: 400 rows, ") and quiet.err.count("\n") == 1
    assert main([*args, "--progress"]) == 0
    loud = capsys.readouterr()
    assert "100%|" in loud.err and "400/400" in loud.err and "backtest: 400 rows" in loud.err
    assert loud.out == quiet.out and loud.out.startswith("timestamp,value,expected,score,alert,forecast_next,")
    assert len(loud.out.splitlines()) == 401


def test_progress_is_wanted_on_a_terminal_or_when_asked() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wanted(True, io.StringIO()) and wanted(None, Tty()) and not wanted(False, io.StringIO())


def test_produce_report_summary_is_one_line() -> None:
    line = ProduceReport(events=12_000, seconds=4.0, rate_eps=3000.0, errors=2, not_json=1).summary()
    assert line == ("sent 12,000 records in 4.0 s (3,000/s): 11,998 acknowledged, 2 failed, "
                    "1 lines not JSON (sent unkeyed)")
