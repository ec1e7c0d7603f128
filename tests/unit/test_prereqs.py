"""``tests/prereqs.py``, which ``make test`` / ``make demo`` run first: one line per missing tool, exit 1.
Run as the Makefile runs it, with a PATH holding only stand-in ``java``/``mvn``/``chromium`` scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "prereqs.py"


def _tool(bin_dir: Path, name: str, stderr: str = "") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\necho '{stderr}' >&2\n")
    path.chmod(0o755)


def _run(target: str, bin_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cache = tmp_path / "kafka-cache"
    (cache / "4.x").mkdir(parents=True, exist_ok=True)
    (cache / "4.x" / "classpath.txt").write_text("cached")  # no network probe in tests
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "STREAMPROC_KAFKA_CACHE": str(cache)}
    return subprocess.run([sys.executable, str(SCRIPT), target], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def test_everything_present_passes_silently(bin_dir: Path, tmp_path: Path) -> None:
    _tool(bin_dir, "java", 'openjdk version "17.0.15" 2025-04-15')
    _tool(bin_dir, "mvn")
    _tool(bin_dir, "chromium")
    r = _run("test", bin_dir, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_an_old_java_is_one_line_with_the_fix(bin_dir: Path, tmp_path: Path) -> None:
    _tool(bin_dir, "java", 'openjdk version "11.0.2" 2019-01-15')
    _tool(bin_dir, "mvn")
    _tool(bin_dir, "chromium")
    r = _run("test", bin_dir, tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("make test: missing: ") and "is Java 11" in lines[0] and "apt-get install" in lines[0]
    assert len(lines) == 2 and "make test-unit" in lines[1]
    _tool(bin_dir, "java", 'java version "1.8.0_281"')  # the old numbering: Java 8
    assert "is Java 8" in _run("test", bin_dir, tmp_path).stderr


def test_each_missing_tool_is_one_line(bin_dir: Path, tmp_path: Path) -> None:
    r = _run("test", bin_dir, tmp_path)
    assert r.returncode == 1
    missing = [ln for ln in r.stderr.splitlines() if ln.startswith("make test: missing: ")]
    assert [m.split()[3] for m in missing] == ["java", "mvn", "chromium"], r.stderr


def test_the_demo_needs_only_python(bin_dir: Path, tmp_path: Path) -> None:
    r = _run("demo", bin_dir, tmp_path)  # no java, mvn or chromium in bin_dir
    assert (r.returncode, r.stderr) == (0, "")
