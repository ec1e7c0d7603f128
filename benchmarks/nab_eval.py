"""Score the shipped detector on NAB's public Twitter-volume series (a benchmark, never imported by tests).

Runs ``streamproc backtest`` logic over the five labelled series into a temporary directory, then
calls NAB's scorer (``nab_subset.py``) on it and prints its report: NAB score per profile, windows
found, false detections per 1,000 rows. Data and scorer live outside the repo:

    python benchmarks/nab_eval.py                       # ../shared/data/nab, ../shared/tools/nab_subset.py
    python benchmarks/nab_eval.py --nab DIR --scorer PATH --json out.json --per-file
    python benchmarks/nab_eval.py --loo                 # also leave-one-series-out, per series

``--loo`` measures how well settings chosen on some series hold on another: for each series, the
settings of :data:`GRID` with the best summed NAB standard score on the *other four* are scored on it.
It prints, per series, the in-sample score of the shipped defaults and the leave-one-out score, and
the settings each fold chose. The shipped defaults are the grid point the same rule picks on all five.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamproc.backtest import backtest_main, read_series, run_backtest  # noqa: E402
from streamproc.detectors import DetectorConfig  # noqa: E402

SERIES = tuple(f"realTweets/Twitter_volume_{s}.csv" for s in ("AAPL", "AMZN", "CRM", "CVS", "FB"))

GRID: dict[str, tuple[float | bool, ...]] = {
    "threshold_nats": (10.0, 12.0, 14.0),
    "week_prior_weeks": (4.0, 16.0),
    "surge_long_run": (0.0, 1.0),
    "drop_long_run": (0.0, 1.0),
    "surge_long_run_week": (False, True),
    "alarm_gain": (0.0, 0.5),
}
"""The settings leave-one-series-out chooses among (every combination; the rest stay at their defaults)."""


def _load_scorer(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("nab_subset", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nab_subset"] = mod  # its dataclasses look themselves up here
    spec.loader.exec_module(mod)
    return mod


def grid_configs(base: DetectorConfig | None = None) -> list[DetectorConfig]:
    """Every combination of :data:`GRID` over ``base`` (default: the shipped defaults)."""
    base = base or DetectorConfig()
    names = list(GRID)
    return [dataclasses.replace(base, **dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(GRID[n] for n in names))]


def _normalised(rows: list[tuple[float, float, float]]) -> float:
    raw, null, perfect = (sum(r[i] for r in rows) for i in range(3))
    return 100.0 * (raw - null) / (perfect - null)


def _choose(results: list[dict[str, tuple[float, float, float]]], on: list[str]) -> int:
    """Index of the grid point with the best summed raw standard score on ``on`` (ties: earliest)."""
    return max(range(len(results)), key=lambda i: (sum(results[i][s][0] for s in on), -i))


def leave_one_out(nab: Path, scorer: Path, progress: bool = True) -> dict[str, Any]:
    """In-sample (shipped defaults) and leave-one-series-out NAB standard scores, per series and overall."""
    ns = _load_scorer(scorer)
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    labels = json.loads((nab / "labels" / "combined_labels.json").read_text())
    cm = json.loads((nab / "config" / "profiles.json").read_text())["standard"]["CostMatrix"]
    costs = ns.Costs(cm["tpWeight"], cm["fpWeight"], cm["fnWeight"])
    truth = {s: ns.load_truth(nab, s, windows, labels) for s in SERIES}
    data = {s: read_series(nab / "data" / s, "timestamp", "value") for s in SERIES}
    import numpy as np

    def per_series(cfg: DetectorConfig) -> dict[str, tuple[float, float, float]]:
        out = {}
        for s in SERIES:
            alerts = np.array([r.alert for r in run_backtest(data[s], cfg, forecasts=False)], dtype=float)
            r = ns.score([truth[s]], [alerts], 0.5, costs)[1][0]
            out[s] = (r.raw, r.null, r.perfect)
        return out

    grid = grid_configs()
    results = []
    for i, cfg in enumerate(grid):
        results.append(per_series(cfg))
        if progress:
            print(f"\rgrid {i + 1}/{len(grid)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    shipped = per_series(DetectorConfig())
    chosen_all = grid[_choose(results, list(SERIES))]
    rows, loo_rows = {}, []
    for s in SERIES:
        pick = _choose(results, [t for t in SERIES if t != s])
        loo_rows.append(results[pick][s])
        rows[s] = {"in_sample": _normalised([shipped[s]]), "loo": _normalised([results[pick][s]]),
                   "chosen": {n: getattr(grid[pick], n) for n in GRID}}
    return {
        "grid": {k: list(v) for k, v in GRID.items()},
        "in_sample_standard": _normalised(list(shipped.values())),
        "loo_standard": _normalised(loo_rows),
        "per_series": rows,
        "defaults_are_the_all_five_choice": all(getattr(chosen_all, n) == getattr(DetectorConfig(), n) for n in GRID),
        "all_five_choice": {n: getattr(chosen_all, n) for n in GRID},
    }


def print_loo(res: dict[str, Any]) -> None:
    print(f"\nleave-one-series-out over {len(grid_configs())} settings "
          f"({', '.join(res['grid'])}); NAB standard profile, per series normalised")
    print(f"  {'series':<36}{'in-sample':>10}{'LOO':>8}  chosen on the other four")
    for s, r in res["per_series"].items():
        chosen = " ".join(f"{k}={v:g}" for k, v in r["chosen"].items())
        print(f"  {s:<36}{r['in_sample']:>10.1f}{r['loo']:>8.1f}  {chosen}")
    print(f"  {'all five':<36}{res['in_sample_standard']:>10.1f}{res['loo_standard']:>8.1f}")
    same = "yes" if res["defaults_are_the_all_five_choice"] else f"no (the rule picks {res['all_five_choice']})"
    print(f"  shipped defaults = the grid point chosen on all five: {same}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nab", type=Path, default=REPO / "../shared/data/nab", help="NAB subset (data/, labels/, config/)")
    ap.add_argument("--scorer", type=Path, default=REPO / "../shared/tools/nab_subset.py", help="nab_subset.py")
    ap.add_argument("--out", type=Path, help="keep the detections here instead of a temporary directory")
    ap.add_argument("--json", type=Path, help="also write the scorer's results as JSON here")
    ap.add_argument("--per-file", action="store_true", help="also print per-file results")
    ap.add_argument("--loo", action="store_true", help="also run the leave-one-series-out check (about 5 minutes)")
    ap.add_argument("--loo-json", type=Path, help="with --loo: write its results as JSON here")
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
        rc = subprocess.run(cmd, check=False).returncode
    if rc == 0 and args.loo:
        res = leave_one_out(args.nab, args.scorer)
        print_loo(res)
        if args.loo_json:
            args.loo_json.write_text(json.dumps(res, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
