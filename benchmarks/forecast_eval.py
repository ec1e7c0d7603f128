"""Rolling-origin forecast accuracy of :mod:`streamproc.forecast` (a benchmark, never imported by tests).

At every bucket after a week of warm-up, the forecaster (fed with the detector's seasonal profile,
as in the worker) forecasts the next 5 minutes and the next hour; both are compared with what came,
and with two naive forecasts: the last value repeated, and the same slot a week earlier. Reported per
series: MASE-style ratios (forecast MAE / naive MAE, < 1 is better than naive) and the share of
outcomes inside the 80% interval.

    python benchmarks/forecast_eval.py                        # NAB Twitter series in ../shared/data/nab
    python benchmarks/forecast_eval.py --weekly 3 --json out.json   # also 3 seeds of the `weekly` scenario
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamproc import detectors, forecast  # noqa: E402
from streamproc.backtest import parse_ts_ms, read_series  # noqa: E402

SERIES = tuple(f"realTweets/Twitter_volume_{s}.csv" for s in ("AAPL", "AMZN", "CRM", "CVS", "FB"))
WEEK_MS = 7 * 86_400_000
HOUR_MS = detectors.HOUR_MS


class _Replay:
    """What the forecaster reads from the detector at one bucket, recorded from a real run: the incident
    flag and the seasonal factors it asks for. Re-running a forecaster setting on it gives the same numbers
    as running it beside the detector, without running the detector again (leave-one-out grids)."""

    __slots__ = ("firing", "factors")

    def __init__(self) -> None:
        self.firing: str | None = None
        self.factors: dict[int, float] = {}


def _season_keys(t: int, step_ms: int, horizons: Sequence[int]) -> set[int]:
    """The bucket starts whose seasonal factor the forecaster asks for after the bucket at ``t``."""
    keys = {t}
    for h in horizons:  # as forecast.predict walks the horizon: one factor per hour
        i = 0
        while i < h:
            u = t + step_ms + i * step_ms
            keys.add(u)
            i += min(-((u - (u // HOUR_MS + 1) * HOUR_MS) // step_ms), h - i)
    return keys


def record(values: Sequence[float], ts: Sequence[int], step_ms: int,
           det_cfg: detectors.DetectorConfig | None = None) -> list[tuple[str | None, dict[int, float]]]:
    """Run the detector once; per bucket, its incident flag and the seasonal factors the forecaster reads."""
    det_cfg = det_cfg or detectors.DetectorConfig()
    horizons = (1, max(1, round(300_000 / step_ms)), max(1, round(HOUR_MS / step_ms)))
    det, out = detectors.new_state(det_cfg), []
    for x, t in zip(values, ts, strict=True):
        detectors.step(det, x, t, step_ms, det_cfg)
        out.append((det.firing, {k: detectors.season(det, k, step_ms, det_cfg)
                                 for k in _season_keys(t, step_ms, horizons)}))
    return out


@contextmanager
def _replaying() -> Iterator[None]:
    real = detectors.season
    detectors.season = lambda det, ts_ms, step_ms, cfg: det.factors[ts_ms]  # type: ignore[assignment,attr-defined]
    try:
        yield
    finally:
        detectors.season = real  # type: ignore[assignment]


def rolling_origin(values: Sequence[float], ts: Sequence[int], step_ms: int,
                   det_cfg: detectors.DetectorConfig | None = None,
                   fc_cfg: forecast.ForecastConfig | None = None,
                   replay: Sequence[tuple[str | None, dict[int, float]]] | None = None) -> dict[str, Any]:
    """Sums of absolute errors and interval hits of the forecaster and the naive forecasts on one series
    (``replay``: the detector's part recorded by :func:`record`, instead of running it)."""
    if replay is not None:
        with _replaying():
            return _rolling_origin(values, ts, step_ms, det_cfg, fc_cfg, replay)
    return _rolling_origin(values, ts, step_ms, det_cfg, fc_cfg, None)


def _rolling_origin(values: Sequence[float], ts: Sequence[int], step_ms: int,
                    det_cfg: detectors.DetectorConfig | None, fc_cfg: forecast.ForecastConfig | None,
                    replay: Sequence[tuple[str | None, dict[int, float]]] | None) -> dict[str, Any]:
    det_cfg, fc_cfg = det_cfg or detectors.DetectorConfig(), fc_cfg or forecast.ForecastConfig()
    h5, h1 = max(1, round(300_000 / step_ms)), max(1, round(3_600_000 / step_ms))
    index = {t: i for i, t in enumerate(ts)}
    fake = _Replay()
    det: Any = detectors.new_state(det_cfg) if replay is None else fake
    fc = forecast.ForecastState()
    acc = {k: 0.0 for k in ("n5", "f5", "last5", "week5", "in5", "n1", "f1", "last1", "week1", "in1")}
    for i, (x, t) in enumerate(zip(values, ts, strict=True)):
        if replay is None:
            detectors.step(det, x, t, step_ms, det_cfg)
        else:
            fake.firing, fake.factors = replay[i]
        forecast.update(fc, x, t, step_ms, det, det_cfg, fc_cfg)
        if t - ts[0] < WEEK_MS:
            continue
        for h, tag in ((h5, "5"), (h1, "1")):
            if i + h >= len(values) or ts[i + h] != t + h * step_ms:
                continue
            ago = index.get(t + step_ms - WEEK_MS)
            if ago is None or ago + h > len(values):
                continue
            actual = sum(values[i + 1:i + 1 + h])
            f = forecast.predict(fc, h, t + step_ms, step_ms, det, det_cfg, cfg=fc_cfg)
            acc["n" + tag] += 1
            acc["f" + tag] += abs(f.expected - actual)
            acc["last" + tag] += abs(h * x - actual)
            acc["week" + tag] += abs(sum(values[ago:ago + h]) - actual)
            acc["in" + tag] += f.low <= actual <= f.high
    return acc


def summarise(acc: dict[str, float]) -> dict[str, float | None]:
    def ratio(a: str, b: str) -> float | None:
        return acc[a] / acc[b] if acc[b] else None

    return {
        "origins": acc["n5"],
        "mae_5m": acc["f5"] / acc["n5"] if acc["n5"] else None,
        "mase_5m_vs_last": ratio("f5", "last5"), "mase_5m_vs_week": ratio("f5", "week5"),
        "mase_1h_vs_last": ratio("f1", "last1"), "mase_1h_vs_week": ratio("f1", "week1"),
        "coverage_5m": acc["in5"] / acc["n5"] if acc["n5"] else None,
        "coverage_1h": acc["in1"] / acc["n1"] if acc["n1"] else None,
    }


def combine(accs: Iterable[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for a in accs:
        for k, v in a.items():
            total[k] = total.get(k, 0.0) + v
    return total


def nab_series(nab: Path) -> dict[str, tuple[list[float], list[int], int]]:
    out = {}
    for rel in SERIES:
        rows = read_series(nab / "data" / rel, "timestamp", "value")
        ts = [parse_ts_ms(t) for t, _ in rows]
        out[rel.rsplit("_", 1)[-1].removesuffix(".csv")] = ([v for _, v in rows], ts, 300_000)
    return out


def headline(per: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The keys ``make bench`` records: the worse of the two naive ratios, pooled over series."""
    pooled = summarise(combine(p["acc"] for p in per.values()))
    return {
        "forecast_mase_5m": max(pooled["mase_5m_vs_last"] or 0, pooled["mase_5m_vs_week"] or 0),
        "forecast_mase_1h": max(pooled["mase_1h_vs_last"] or 0, pooled["mase_1h_vs_week"] or 0),
        "forecast_interval_coverage": pooled["coverage_1h"] or 0.0,
        "forecast_interval_coverage_5m": pooled["coverage_5m"] or 0.0,
    }


GRID: dict[str, tuple[Any, ...]] = {
    "rise_discount": (0.0, 0.5),
    "season_carry": (0.0, 0.5, 1.0),
    "median_step": (0.0, 0.005, 0.02),
}
"""The settings leave-one-series-out chooses among (``--loo``); the others stay at their defaults
(``next_halflife_ms``, ``next_clip_sd`` and ``blend_step`` were chosen the same way on a grid of their own,
before these existed)."""


def _objective(per: dict[str, dict[str, Any]], names: Iterable[str]) -> float:
    """What a setting is chosen by: the mean over the series of the next-5-minutes ratio to the last value."""
    ratios = [per[n]["mase_5m_vs_last"] for n in names]
    return sum(ratios) / len(ratios)


def loo(series: dict[str, tuple[list[float], list[int], int]]) -> dict[str, Any]:
    """Every grid point on every series (detector recorded once per series); for each series, the point
    best on the others scored on it (leave-one-out), and the point best on all (in-sample)."""
    replays = {name: record(v, ts, step) for name, (v, ts, step) in series.items()}
    points = [dict(zip(GRID, combo, strict=True)) for combo in itertools.product(*GRID.values())]
    results = []
    for k, point in enumerate(points):
        cfg = replace(forecast.ForecastConfig(), **point)
        per = {}
        for name, (v, ts, step) in series.items():
            acc = rolling_origin(v, ts, step, fc_cfg=cfg, replay=replays[name])
            per[name] = {"acc": acc, **summarise(acc)}
        results.append((point, per))
        print(f"grid {k + 1}/{len(points)} {point}: " + " ".join(
            f"{n} {p['mase_5m_vs_last']:.3f}/{p['mase_1h_vs_last']:.3f}" for n, p in per.items()), flush=True)
    names = list(series)
    best_all = min(results, key=lambda r: _objective(r[1], names))
    out: dict[str, Any] = {"grid": GRID, "in_sample_choice": best_all[0], "per_series": {}}
    for held in names:
        others = [n for n in names if n != held]
        point, per = min(results, key=lambda r: _objective(r[1], others))
        out["per_series"][held] = {
            "loo_choice": point,
            "loo": {k: v for k, v in per[held].items() if k != "acc"},
            "in_sample": {k: v for k, v in best_all[1][held].items() if k != "acc"},
        }
    return out


def speed(series: dict[str, tuple[list[float], list[int], int]]) -> float:
    """Microseconds per bucket spent in the forecaster as the engine calls it (update, then both feature
    horizons), the detector stepped outside the timing."""
    det_cfg, fc_cfg = detectors.DetectorConfig(), forecast.ForecastConfig()
    spent, n = 0, 0
    for values, ts, step in series.values():
        det, fc = detectors.new_state(det_cfg), forecast.ForecastState()
        for x, t in zip(values, ts, strict=True):
            detectors.step(det, x, t, step, det_cfg)
            t0 = time.perf_counter_ns()
            forecast.update(fc, x, t, step, det, det_cfg, fc_cfg)
            forecast.units_ahead(fc, det, t + step, step, det_cfg)
            spent += time.perf_counter_ns() - t0
            n += 1
    return spent / n / 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nab", type=Path, default=REPO / "../shared/data/nab", help="NAB subset (data/realTweets)")
    ap.add_argument("--weekly", type=int, default=0, help="also this many seeds of the generated `weekly` scenario")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--loo", action="store_true", help="choose the settings of GRID by leave-one-series-out")
    ap.add_argument("--speed", action="store_true", help="time the forecaster (microseconds per bucket)")
    args = ap.parse_args(argv)
    if not (args.nab / "data").is_dir():
        print(f"error: {args.nab}/data not found; pass --nab", file=sys.stderr)
        return 2
    if args.speed:
        print(f"forecaster: {speed(nab_series(args.nab)):.1f} us per bucket (update + next 5 min + next hour)")
        return 0
    if args.loo:
        res = loo(nab_series(args.nab))
        print(f"chosen on all series: {res['in_sample_choice']}")
        print(f"{'series':<8}{'5m in':>8}{'5m LOO':>8}{'1h in':>8}{'1h LOO':>8}{'cov in':>8}{'cov LOO':>8}  LOO choice")
        for name, r in res["per_series"].items():
            a, b = r["in_sample"], r["loo"]
            print(f"{name:<8}{a['mase_5m_vs_last']:>8.3f}{b['mase_5m_vs_last']:>8.3f}{a['mase_1h_vs_last']:>8.3f}"
                  f"{b['mase_1h_vs_last']:>8.3f}{a['coverage_1h']:>8.3f}{b['coverage_1h']:>8.3f}  {r['loo_choice']}")
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return 0
    per: dict[str, dict[str, Any]] = {}
    for name, (values, ts, step) in nab_series(args.nab).items():
        acc = rolling_origin(values, ts, step)
        per[name] = {"acc": acc, **summarise(acc)}
    if args.weekly:
        from weekly_check import weekly_series  # noqa: PLC0415 (benchmarks/weekly_check.py)

        for seed in range(1, args.weekly + 1):
            accs = [rolling_origin(v, ts, step) for v, ts, step in weekly_series(seed, signal="units")]
            acc = combine(accs)
            per[f"weekly-seed{seed}"] = {"acc": acc, **summarise(acc)}
    print(f"{'series':<16}{'5m/last':>9}{'5m/week':>9}{'1h/last':>9}{'1h/week':>9}{'cov 5m':>8}{'cov 1h':>8}")
    for name, r in per.items():
        cells = [r["mase_5m_vs_last"], r["mase_5m_vs_week"], r["mase_1h_vs_last"], r["mase_1h_vs_week"]]
        print(f"{name:<16}" + "".join(f"{c:>9.3f}" for c in cells) + f"{r['coverage_5m']:>8.3f}{r['coverage_1h']:>8.3f}")
    nab_only = {k: v for k, v in per.items() if not k.startswith("weekly")}
    head = {"nab": headline(nab_only)}
    if args.weekly:
        head["weekly"] = headline({k: v for k, v in per.items() if k.startswith("weekly")})
    for what, h in head.items():
        print(f"{what}: " + ", ".join(f"{k} {v:.3f}" for k, v in h.items()))
    if args.json:
        args.json.write_text(json.dumps({"per_series": {k: {x: y for x, y in v.items() if x != "acc"}
                                                       for k, v in per.items()}, **head}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
