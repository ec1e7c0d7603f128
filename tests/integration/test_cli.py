"""The ``streamproc`` command as a user runs it: demo, broker, backtest, exit codes."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamproc.broker import free_port, wait_for_port

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[3] / "shared"
NAB_CSV = SHARED / "data" / "nab" / "data" / "realTweets" / "Twitter_volume_AAPL.csv"


def _streamproc(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamproc", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,pgid=,args="], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and int(parts[1]) == pid:
            found.append(int(parts[0]))
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for p in pids:
        try:
            os.kill(p, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{p}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            continue
        alive.append(p)
    return alive


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT as a terminal's foreground process gets it: a suite started in the background by a shell
    without job control (``nohup make test &``) runs with SIGINT ignored, and a child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_shows_the_injected_surge_within_90s_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["STREAMPROC_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "demo.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streamproc", "demo", "--web-port", str(port)],
                                preexec_fn=_ctrl_c_as_in_a_terminal,  # noqa: PLW1509
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    started = time.monotonic()
    children: set[int] = set()
    surge_product = None
    seen_on_receiver = seen_on_api = False
    triggers: dict[str, Any] = {}
    try:
        while time.monotonic() - started < 90 and not (seen_on_receiver and seen_on_api and _triggered(triggers)
                                                       and "[triggers]" in log.read_text()):
            time.sleep(1)
            children.update(_children_of(proc.pid))
            for c in list(children):
                children.update(_children_of(c))
            text = log.read_text()
            if surge_product is None and "x10 demand surge on " in text:
                surge_product = text.split("x10 demand surge on ", 1)[1].split()[0]
            if surge_product and f"demand_surge           {surge_product}" in text:
                seen_on_receiver = True
            if surge_product and not seen_on_api:
                with contextlib.suppress(OSError, ValueError):
                    import urllib.request

                    body = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/alerts?status=firing",
                                                               timeout=2).read())
                    seen_on_api = any(a["labels"]["product_id"] == surge_product
                                      and a["labels"]["alertname"] == "demand_surge" for a in body["alerts"])
            if not _triggered(triggers):
                with contextlib.suppress(OSError, ValueError):
                    import urllib.request

                    triggers = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/state",
                                                                   timeout=2).read())["triggers"]
        elapsed = time.monotonic() - started
        # The demo's customers make marketing triggers, shown on the dashboard: the history's abandoned carts
        # and browse loops at least, each listed with the customer and the products.
        assert _triggered(triggers), triggers
        assert triggers["latest"] and all(t["user_id"] and t["product_ids"] for t in triggers["latest"]), triggers
        assert seen_on_receiver, log.read_text()[-3000:]
        assert seen_on_api, log.read_text()[-3000:]
        assert elapsed <= 90
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the foreground process
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    time.sleep(0.5)
    assert children, "the demo started no child processes?"
    assert _alive(sorted(children)) == [], log.read_text()[-2000:]
    text = log.read_text()
    assert "stopped;" in text
    _check_the_story(text, surge_product, tmp_path / "data" / "demo-worker.log")


def _triggered(triggers: dict[str, Any]) -> bool:
    counts = triggers.get("counts") or {}
    return counts.get("cart_abandoned", 0) > 0 and counts.get("browse_abandoned", 0) > 0


def _check_the_story(text: str, surge_product: str, worker_log: Path) -> None:
    """The console reads like a story: the plan, each injection announced once as it starts (before the
    alerts it causes), each alert once and marked; the worker's own log went to its file."""
    lines = text.splitlines()
    plan = [ln.split()[0] for ln in lines if ln.startswith("    #")]
    assert plan[:3] == ["#1", "#2", "#3"], text[:3000]
    announced = [ln for ln in lines if ln.startswith("[inject]")]
    numbers = [ln.split()[3] for ln in announced]
    assert numbers and numbers == sorted(set(numbers), key=lambda n: int(n[1:])), announced
    first_surge_alert = next(i for i, ln in enumerate(lines)
                             if ln.startswith("[webhook]") and f"demand_surge           {surge_product}" in ln)
    assert any(ln.startswith("[inject]") and surge_product in ln for ln in lines[:first_surge_alert])
    assert "[injection #1]" in lines[first_surge_alert]
    alerts = [ln for ln in lines if ln.startswith("[webhook]")]
    assert alerts and all("[injection #" in ln or "[not injected" in ln for ln in alerts), alerts
    assert len(alerts) == len(set(alerts))  # each alert once
    # no Faust/aiokafka log lines, warnings or terminal escape codes on the console
    assert "WARNING" not in text and "buffer full" not in text and "\x1b[" not in text, text[-3000:]
    assert worker_log.exists() and "streamproc worker" in worker_log.read_text()
    reported = [ln for ln in lines if ln.startswith("[triggers]")]
    assert reported and "cart abandoned" in reported[-1] and "published" in reported[-1], reported
    summary = next(ln for ln in lines if "stopped;" in ln)
    assert "matching an injection" in summary and "started injections alerted" in summary


def test_demo_with_its_web_port_taken_exits_2_at_once_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        started = time.monotonic()
        r = _streamproc("demo", "--web-port", str(port), env=env, timeout=30)
        took = time.monotonic() - started
        env["STREAMPROC_WEB_PORT"] = str(port)
        worker = _streamproc("worker", env=env, timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""  # nothing was started: no broker address, no dashboard URL, no plan
    assert r.stderr.strip().splitlines() == [
        f"streamproc: error: port {port} is in use (another streamproc demo or worker, or another program); "
        "pick a free one with --web-port N (or STREAMPROC_WEB_PORT=N)"]
    assert took < 15  # no broker start, no worker start-up and time-out
    assert worker.returncode == 2 and worker.stdout == ""
    assert worker.stderr.strip().splitlines() == [
        f"streamproc: error: port {port} is in use (another streamproc demo or worker, or another program); "
        "pick a free one with STREAMPROC_WEB_PORT=N"]


def test_demo_with_an_impossible_port_names_the_flag() -> None:
    r = _streamproc("demo", "--web-port", "99999")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1] == "streamproc: error: argument --web-port: 99999 is not a port number; use 1-65535"


def test_broker_command_prints_bootstrap_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamproc", "broker", "--port", str(port)],
                            preexec_fn=_ctrl_c_as_in_a_terminal,  # noqa: PLW1509
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line == f"127.0.0.1:{port}"
        assert wait_for_port("127.0.0.1", port, 5)
        children = _children_of(proc.pid)
        assert children
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    time.sleep(0.3)
    assert _alive(children) == []


def test_broker_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _streamproc("broker", "--port", str(port))
    assert r.returncode == 2
    assert f"port {port} is in use" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_configuration_exits_2_with_the_fix() -> None:
    env = dict(os.environ, STREAMPROC_WEB_PORT="not-a-port")
    r = _streamproc("worker", env=env)
    assert r.returncode == 2
    assert "STREAMPROC_WEB_PORT" in r.stderr and "integer" in r.stderr
    r = _streamproc("generate", "--rate", "10")
    assert r.returncode == 2 and "--duration" in r.stderr


@pytest.mark.skipif(not NAB_CSV.exists(), reason=f"reference data not found at {NAB_CSV}")
def test_backtest_on_labelled_series() -> None:
    r = _streamproc("backtest", "--csv", str(NAB_CSV), "--time-col", "timestamp", "--value-col", "value",
                    timeout=120)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    # The contract's columns first, then the forecaster's (extending the shape is allowed, reordering is not).
    assert list(rows[0]) == ["timestamp", "value", "expected", "score", "alert", "forecast_next", "forecast_next_low",
                             "forecast_next_high", "forecast_1h", "forecast_1h_low", "forecast_1h_high"]
    with open(NAB_CSV) as fh:
        source = list(csv.DictReader(fh))
    assert [row["timestamp"] for row in rows] == [row["timestamp"] for row in source]
    alerts = sum(int(row["alert"]) for row in rows)
    assert 1 <= alerts <= 40
    assert all(0.0 <= float(row["score"]) <= 1.0 for row in rows)
    r = _streamproc("backtest", "--csv", str(NAB_CSV), "--time-col", "nope", "--value-col", "value")
    assert r.returncode == 2 and "nope" in r.stderr
