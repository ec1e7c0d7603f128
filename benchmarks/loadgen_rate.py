"""Load generator rate: ``python -m streamproc generate`` from one process, at a target rate.

The contract is ``streamproc generate --rate EPS --duration S [--scenario NAME] [--seed N]``; it must
sustain 50,000 events/s. This runs it as a subprocess against the benchmark's broker (``STREAMPROC_BROKER``
in its environment, its own topic names so that nothing else reads them) and reads the summary line it
prints on stderr: ``sent N records in T s (R/s): D acknowledged, E failed``. The achieved rate is the
CLI's own: records over the wall time from the first record to the last acknowledgement (the process's
start-up, the catalogue and the topic creation are before that and are reported as ``wall_s``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from streamproc.settings import TOPICS

REPO = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"sent ([\d,]+) records in ([\d.]+) s \(([\d,]+)/s\): ([\d,]+) acknowledged, ([\d,]+) failed")


def loadgen_rate(bootstrap: str, target_eps: float = 50_000.0, duration_s: float = 5.0,
                 scenario: str | None = None, seed: int = 1, timeout_s: float = 90.0) -> dict[str, Any]:
    """Run ``streamproc generate`` at ``target_eps`` for ``duration_s`` (wall); achieved rate and errors.

    ``scenario=None`` leaves the CLI's default (``surges``)."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update({"STREAMPROC_BROKER": bootstrap, "STREAMPROC_APP_ID": f"loadgen-{tag}",
                "STREAMPROC_LOG_LEVEL": "warn"})
    for t in TOPICS:
        env[f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}"] = f"{tag}-{t}"
    cmd = [sys.executable, "-m", "streamproc", "generate", "--rate", f"{target_eps:g}",
           "--duration", f"{duration_s:g}", "--seed", str(seed), "--no-progress"]
    if scenario:
        cmd += ["--scenario", scenario]
    t0 = time.monotonic()
    cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=str(REPO))
    wall = time.monotonic() - t0
    m = SUMMARY.search(cp.stderr)
    if cp.returncode or m is None:
        raise RuntimeError(f"streamproc generate exit {cp.returncode}: {cp.stderr[-800:]}")
    sent, secs, rate, acked, failed = m.groups()
    events, seconds = int(sent.replace(",", "")), float(secs)
    return {
        "target_eps": target_eps, "duration_s": duration_s, "scenario": scenario or "surges (the CLI default)",
        "seed": seed, "events": events, "seconds": seconds,
        "achieved_eps": float(rate.replace(",", "")),  # the CLI's events / unrounded seconds
        "generated_eps": events / duration_s,  # what the scenario asked for (Poisson, daily cycle)
        "acknowledged": int(acked.replace(",", "")), "producer_errors": int(failed.replace(",", "")),
        "wall_s": wall, "before_first_record_s": wall - seconds, "command": " ".join(["python", *cmd[1:]]),
    }
