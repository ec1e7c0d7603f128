"""``streamproc backtest --plot``: a picture of a backtest, so a person can see why an alert fired.

matplotlib is an optional extra (``pip install 'streamproc[plot]'``) and is imported only here, only
when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .backtest import BacktestRow

__all__ = ["plot_backtest"]


def plot_backtest(results: list[BacktestRow], ts_ms: list[int], path: str | Path, *, title: str = "") -> None:
    """Draw the series, the detector's expectation, the forecaster's 80% band for each bucket (issued one
    bucket ahead), the anomaly score, and the alerts, into an image at ``path`` (format from its suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'streamproc[plot]'") from None
    import numpy as np

    t = np.array(ts_ms, dtype="datetime64[ms]")
    value = np.array([r.value for r in results])
    expected = np.array([r.expected for r in results])
    low = np.array([0.0] + [r.next.low for r in results[:-1]])  # the interval issued for this bucket
    high = np.array([0.0] + [r.next.high for r in results[:-1]])
    score = np.array([r.score for r in results])
    fig, (ax, ax_s) = plt.subplots(2, 1, sharex=True, figsize=(14, 6), gridspec_kw={"height_ratios": [4, 1]})
    ax.fill_between(t, low, high, color="tab:blue", alpha=0.18, linewidth=0, label="forecast 80% interval")
    ax.plot(t, value, color="black", linewidth=0.6, label="count")
    ax.plot(t, expected, color="tab:orange", linewidth=1.0, label="detector expectation")
    for kind, marker, color in (("demand_surge", "^", "tab:red"), ("demand_drop", "v", "tab:purple")):
        idx = [i for i, r in enumerate(results) if r.alert and r.kind == kind]
        if idx:
            ax.scatter(t[idx], value[idx], marker=marker, s=70, color=color, zorder=3, label=kind)
    ax.set_ylabel("count per bucket")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    ax_s.plot(t, score, color="tab:gray", linewidth=0.7)
    ax_s.axhline(0.5, color="tab:red", linewidth=0.6, linestyle="--")
    ax_s.set_ylim(0, 1.02)
    ax_s.set_ylabel("score")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
