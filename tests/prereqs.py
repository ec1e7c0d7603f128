"""What ``make install``, ``make demo`` and ``make test`` need beyond this repository, checked before
anything is installed or started: one line per missing piece saying how to get it, then exit 1.

    python3 tests/prereqs.py install|demo|test

Standard library only: it runs with the system Python, before ``.venv`` exists.

- every target: Python 3.11 or 3.12 with the ``venv`` module and ``ensurepip`` (Debian/Ubuntu ship them
  in ``python3-venv``);
- ``test`` also: Java 17+ and Maven (the Apache Kafka tests fetch Kafka 4.x from Maven Central on their
  first run), Maven Central reachable unless Kafka's classpath is cached or ``~/.m2/settings.xml`` may name
  a mirror, and Chromium (the dashboard's browser test).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

MIN_JAVA = 17
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2/"
APT = "Debian/Ubuntu: sudo apt-get install"


def python_problems() -> list[str]:
    v = sys.version_info
    if not ((3, 11) <= (v.major, v.minor) < (3, 13)):
        return [f"Python 3.11 or 3.12 needed, {sys.executable} is {v.major}.{v.minor}: install one and run "
                f"`make PYTHON=python3.11 ...`"]
    try:
        import ensurepip  # noqa: F401
        import venv  # noqa: F401
    except ImportError:
        return [f"the venv module of {sys.executable} is missing ({APT} python3-venv)"]
    return []


def java_problems() -> list[str]:
    home = os.environ.get("JAVA_HOME")
    java = shutil.which("java") or (str(Path(home) / "bin" / "java") if home else None)
    if not java or not os.access(java, os.X_OK):
        return [f"java not found: the Apache Kafka tests need Java {MIN_JAVA}+ ({APT} openjdk-17-jre-headless)"]
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"`{java} -version` failed ({exc}): the Apache Kafka tests need Java {MIN_JAVA}+"]
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = (int(m.group(2) or 0) if m.group(1) == "1" else int(m.group(1))) if m else 0
    if major < MIN_JAVA:
        return [f"{java} is Java {major or '?'}: the Apache Kafka tests need Java {MIN_JAVA}+ "
                f"({APT} openjdk-17-jre-headless, or set JAVA_HOME)"]
    return []


def maven_problems() -> list[str]:
    if not shutil.which("mvn"):
        return [f"mvn (Apache Maven) not found: it fetches Apache Kafka for the Kafka tests ({APT} maven)"]
    cache = Path(os.environ.get("STREAMPROC_KAFKA_CACHE", str(Path.home() / ".cache" / "streamproc" / "kafka")))
    if any(cache.glob("*/classpath.txt")) or (Path.home() / ".m2" / "settings.xml").exists():
        return []  # fetched before, or a settings file that may point at a mirror
    try:
        urllib.request.urlopen(urllib.request.Request(MAVEN_CENTRAL, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        return []  # it answered
    except OSError as exc:
        return [f"Maven Central ({MAVEN_CENTRAL}) not reachable ({getattr(exc, 'reason', exc)}): the first test "
                "run downloads Apache Kafka from it (or name a mirror in ~/.m2/settings.xml)"]
    return []


def chromium_problems() -> list[str]:
    found = os.environ.get("STREAMPROC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        return [f"chromium not found: the dashboard's browser test needs it ({APT} chromium; or set "
                "STREAMPROC_CHROMIUM to a Chromium binary)"]
    return []


def problems(target: str) -> list[str]:
    out = python_problems()
    if target == "test":
        out += java_problems() + maven_problems() + chromium_problems()
    return out


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else "test"
    if target not in ("install", "demo", "test"):
        print(f"usage: {argv[0]} install|demo|test", file=sys.stderr)
        return 2
    found = problems(target)
    for line in found:
        print(f"make {target}: missing: {line}", file=sys.stderr)
    if found and target == "test":
        print("make test: `make test-unit` runs the unit tests without these (seconds)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
