"""Score the shipped detector on NAB's public Twitter-volume series (a benchmark, never imported by tests).

Runs ``streamproc backtest`` logic over the five labelled series into a temporary directory, then
calls NAB's scorer (``nab_subset.py``) on it and prints its report: NAB score per profile, windows
found, false detections per 1,000 rows. Data and scorer live outside the repo:

    python benchmarks/nab_eval.py                       # ../shared/data/nab, ../shared/tools/nab_subset.py
    python benchmarks/nab_eval.py --nab DIR --scorer PATH --json out.json --per-file
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamproc.backtest import backtest_main  # noqa: E402

SERIES = tuple(f"realTweets/Twitter_volume_{s}.csv" for s in ("AAPL", "AMZN", "CRM", "CVS", "FB"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nab", type=Path, default=REPO / "../shared/data/nab", help="NAB subset (data/, labels/, config/)")
    ap.add_argument("--scorer", type=Path, default=REPO / "../shared/tools/nab_subset.py", help="nab_subset.py")
    ap.add_argument("--out", type=Path, help="keep the detections here instead of a temporary directory")
    ap.add_argument("--json", type=Path, help="also write the scorer's results as JSON here")
    ap.add_argument("--per-file", action="store_true", help="also print per-file results")
    args = ap.parse_args(argv)
    for path, what in ((args.nab / "labels" / "combined_windows.json", "--nab"), (args.scorer, "--scorer")):
        if not path.is_file():
            print(f"error: {path} not found; pass {what}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        det = args.out or Path(tmp)
        for rel in SERIES:
            target = det / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("w", newline="") as fh:
                backtest_main(args.nab / "data" / rel, "timestamp", "value", "orders", fh)
        cmd = [sys.executable, str(args.scorer), "--nab", str(args.nab), "--files", "public",
               "--detections", str(det), "--name", "streamproc"]
        if args.json:
            cmd += ["--json", str(args.json)]
        if args.per_file:
            cmd.append("--per-file")
        return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
