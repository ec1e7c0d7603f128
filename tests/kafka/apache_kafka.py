"""A real Apache Kafka broker (KRaft) for the test suite, resolved from Maven Central.

No pytest here: the fixtures live in ``tests.kafka.conftest_plugin`` and ``python -m tests.kafka.cli``
starts a cluster by hand.

* :func:`resolve_kafka_classpath` writes a tiny pom.xml for ``org.apache.kafka:kafka_2.13`` plus a
  log4j2 slf4j binding, asks the machine's ``mvn`` for the runtime classpath and caches it, so a second
  call costs one ``stat`` per jar.
* :class:`KafkaCluster` formats and launches ``n`` JVMs in KRaft combined mode (every node is broker and
  controller; the static voter set is all nodes), on free loopback ports, and waits until every node
  answers and the metadata quorum has a leader.  Optional SASL_PLAINTEXT/SCRAM listener with users
  created at format time (``kafka-storage format --add-scram``).

Processes run in their own session, are killed in ``stop()`` and at exit, and (when launched from the main
thread) die with the Python process even if it is SIGKILLed (``PR_SET_PDEATHSIG``): no JVM outlives the tests.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "KafkaCluster",
    "KafkaError",
    "KafkaNode",
    "KafkaStartError",
    "KafkaUnavailable",
    "check_tools",
    "resolve_kafka_classpath",
]

log = logging.getLogger(__name__)

#: Newest 4.x release that Maven Central serves here (override with STREAMPROC_KAFKA_VERSION).
DEFAULT_KAFKA_VERSION = os.environ.get("STREAMPROC_KAFKA_VERSION", "4.4.0")
DEFAULT_CACHE_DIR = Path(
    os.environ.get("STREAMPROC_KAFKA_CACHE", str(Path.home() / ".cache" / "streamproc" / "kafka"))
)
# log4j2's binding for slf4j 1.x (Kafka 4.x logs through slf4j-api 1.7 + log4j2), same line as the
# log4j-core Kafka brings in; without it the broker logs nothing at all.
LOG4J_VERSION = "2.25.5"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+

BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"


class KafkaError(RuntimeError):
    """Base class of this module's errors."""


class KafkaUnavailable(KafkaError):
    """Java or Maven is missing (or too old): the only reason the fixtures skip."""


class KafkaStartError(KafkaError):
    """Resolution, formatting or startup failed although the tools are there (a real error)."""


# --------------------------------------------------------------------------------------------------
# tools and classpath


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise KafkaUnavailable(f"cannot tell the Java version from `{java} -version`: {text.strip()!r}")
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def check_tools(*, need_mvn: bool = True) -> tuple[str, str | None]:
    """Return ``(java, mvn)`` paths, or raise :class:`KafkaUnavailable` saying what is missing."""
    java_home = os.environ.get("JAVA_HOME")
    java = shutil.which("java") or (
        str(Path(java_home) / "bin" / "java")
        if java_home and (Path(java_home) / "bin" / "java").exists()
        else None
    )
    if not java:
        raise KafkaUnavailable("`java` not found on PATH (Apache Kafka 4.x needs Java 17+)")
    major = _java_major(java)
    if major < MIN_JAVA:
        raise KafkaUnavailable(f"`{java}` is Java {major}; Apache Kafka 4.x needs Java {MIN_JAVA}+")
    mvn = shutil.which("mvn")
    if need_mvn and not mvn:
        raise KafkaUnavailable(
            "`mvn` (Apache Maven) not found on PATH: needed to fetch Kafka from Maven Central"
        )
    return java, mvn


def _pom(version: str) -> str:
    def dep(g: str, a: str, v: str, scope: str = "compile") -> str:
        return (
            f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
            f"<version>{v}</version><scope>{scope}</scope></dependency>\n"
        )

    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>streamproc.tests</groupId>\n"
        f"  <artifactId>apache-kafka-runtime-{version}</artifactId>\n"
        "  <version>1</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <dependencies>\n"
        # kafka_2.13 (core: kafka.Kafka, kafka.tools.StorageTool) brings kafka-server, kafka-storage,
        # kafka-raft, kafka-metadata, the coordinators, kafka-clients, scala and log4j-core.
        + dep("org.apache.kafka", "kafka_2.13", version)
        + dep("org.apache.kafka", "kafka-server", version)
        + dep("org.apache.kafka", "kafka-storage", version)
        + dep("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION, "runtime")
        + "  </dependencies>\n</project>\n"
    )


def _classpath_ok(cp: str) -> bool:
    jars = [p for p in cp.split(os.pathsep) if p]
    return bool(jars) and all(os.path.isfile(p) for p in jars)


def resolve_kafka_classpath(version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | None = None) -> str:
    """Classpath (``os.pathsep``-joined jars in ~/.m2) to run an Apache Kafka ``version`` broker.

    The first call writes ``<cache_dir>/<version>-<hash>/pom.xml`` and runs
    ``mvn -B -q dependency:build-classpath`` (downloads into the Maven local repository); later calls read
    the cached ``classpath.txt`` and only check that every jar is still there.  Safe to call from several
    processes at once (file lock).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    pom = _pom(version)
    key = hashlib.sha256(pom.encode()).hexdigest()[:10]
    work = cache_dir / f"{version}-{key}"
    cp_file = work / "classpath.txt"
    if cp_file.exists():
        cp = cp_file.read_text().strip()
        if _classpath_ok(cp):
            return cp
    _, mvn = check_tools(need_mvn=True)
    assert mvn is not None
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cp_file.exists():  # another process resolved it while we waited
            cp = cp_file.read_text().strip()
            if _classpath_ok(cp):
                return cp
        (work / "pom.xml").write_text(pom)
        tmp_out = work / "classpath.txt.tmp"
        cmd = [
            mvn, "-B", "-q", "-f", str(work / "pom.xml"),
            "dependency:build-classpath",
            "-Dmdep.includeScope=runtime",
            f"-Dmdep.outputFile={tmp_out}",
        ]  # fmt: skip
        t0 = time.monotonic()
        log.info("resolving Apache Kafka %s from Maven Central: %s", version, " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=work)
        except subprocess.TimeoutExpired as e:
            raise KafkaStartError(f"mvn timed out after {e.timeout}s resolving Apache Kafka {version}") from e
        if proc.returncode != 0 or not tmp_out.exists():
            out = (proc.stdout + proc.stderr).strip()[-4000:]
            raise KafkaStartError(
                f"mvn could not resolve org.apache.kafka:kafka_2.13:{version} (exit {proc.returncode}):\n{out}"
            )
        cp = tmp_out.read_text().strip()
        if not _classpath_ok(cp):
            raise KafkaStartError(f"mvn wrote a classpath with missing jars: {cp[:500]}")
        os.replace(tmp_out, cp_file)
        log.info("resolved Apache Kafka %s in %.1fs", version, time.monotonic() - t0)
        return cp


# --------------------------------------------------------------------------------------------------
# processes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _pdeathsig_ok() -> bool:
    return sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()


_LIVE: weakref.WeakSet[KafkaNode] = weakref.WeakSet()


def _kill_all_at_exit() -> None:
    for node in list(_LIVE):
        with contextlib.suppress(Exception):
            node.kill()


atexit.register(_kill_all_at_exit)


def _new_cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _props(d: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    return "".join(f"{k}={fmt(v)}\n" for k, v in d.items())


_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaNode:
    """One KRaft combined-mode JVM (broker + controller) of a :class:`KafkaCluster`."""

    def __init__(
        self,
        node_id: int,
        directory: Path,
        *,
        host: str,
        broker_port: int,
        controller_port: int,
        sasl_port: int | None,
        java: str,
        classpath: str,
        heap: str,
        jvm_opts: Sequence[str],
    ) -> None:
        self.node_id = node_id
        self.dir = directory
        self.host = host
        self.broker_port = broker_port
        self.controller_port = controller_port
        self.sasl_port = sasl_port
        self.java = java
        self.classpath = classpath
        self.heap = heap
        self.jvm_opts = list(jvm_opts)
        self.data_dir = directory / "data"
        self.config_path = directory / "server.properties"
        self.log_path = directory / "server.log"  # log4j2
        self.stdout_path = directory / "stdout.log"  # JVM stdout/stderr
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.broker_port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"{self.host}:{self.sasl_port}" if self.sasl_port else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            self.java,
            f"-Xmx{self.heap}",
            "-Xss1m",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.dir}",
            *self.jvm_opts,
            "-cp",
            self.classpath,
            main,
            *args,
        ]

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_props(config))
        (self.dir / "log4j2.properties").write_text(_LOG4J2.format(path=self.log_path))

    def format_cmd(self, cluster_id: str, scram: Sequence[str]) -> list[str]:
        args = ["format", "--config", str(self.config_path), f"--cluster-id={cluster_id}"]
        for s in scram:
            args += ["--add-scram", s]
        # storage format is a short tool run: C1 only, small heap, serial GC -> ~1 s per JVM
        return [
            self.java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            self.classpath,
            STORAGE_TOOL_MAIN,
            *args,
        ]

    def launch(self) -> None:
        if self.running:
            raise KafkaError(f"node {self.node_id} is already running")
        out = open(self.stdout_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self._java_cmd(BROKER_MAIN, str(self.config_path)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                # PDEATHSIG follows the *thread* that forks: only tie the JVM to the main thread's life
                # (a worker thread may exit long before the process; atexit covers that case).
                preexec_fn=_die_with_parent if _pdeathsig_ok() else None,  # noqa: PLW1509
            )
        finally:
            out.close()
        _LIVE.add(self)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (no controlled shutdown, no flush): a crashed broker."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        _LIVE.discard(self)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (controlled shutdown), SIGKILL after ``timeout_s``."""
        if self.proc is None:
            return
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        self.kill()

    def log_tail(self, n: int = 40) -> str:
        parts = []
        for p in (self.stdout_path, self.log_path):
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()
                interesting = [ln for ln in lines if " ERROR " in ln or " FATAL " in ln or "Exception" in ln]
                parts.append(f"--- {p} (last {n} lines) ---\n" + "\n".join(lines[-n:]))
                if interesting:
                    parts.append(f"--- {p} errors ---\n" + "\n".join(interesting[-10:]))
        return "\n".join(parts)


class KafkaCluster:
    """``n_nodes`` Apache Kafka JVMs in KRaft combined mode on loopback.

    >>> with KafkaCluster(3, tmp_dir) as kafka:          # doctest: +SKIP
    ...     produce(kafka.bootstrap)
    ...     kafka.kill_node(1); kafka.restart_node(1)

    ``extra_config`` is merged into every node's server.properties (last word).  ``scram_users``
    (``{"name": "password"}``) adds a SASL_PLAINTEXT listener (``sasl_bootstrap``) with
    ``scram_mechanism`` and creates the users at format time.
    """

    def __init__(
        self,
        n_nodes: int = 1,
        base_dir: Path | str | None = None,
        *,
        extra_config: Mapping[str, Any] | None = None,
        version: str = DEFAULT_KAFKA_VERSION,
        classpath: str | None = None,
        scram_users: Mapping[str, str] | None = None,
        scram_mechanism: str = "SCRAM-SHA-256",
        heap: str = "512m",
        jvm_opts: Sequence[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if n_nodes < 1:
            raise ValueError("n_nodes must be >= 1")
        if scram_mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise ValueError(f"unsupported SCRAM mechanism {scram_mechanism!r}")
        self.n_nodes = n_nodes
        self.version = version
        self.extra_config = dict(extra_config or {})
        self.scram_users = dict(scram_users or {})
        self.scram_mechanism = scram_mechanism
        self.heap = heap
        # Defaults tuned for start-up time on a 2-core box: C1 only and the serial collector start a
        # broker in a few seconds and are plenty for test traffic.
        self.jvm_opts = (
            list(jvm_opts) if jvm_opts is not None else ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
        )
        self.host = host
        self._classpath = classpath
        self._own_dir = base_dir is None
        self.base_dir = (
            Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="apache-kafka-"))
        )
        self.cluster_id = _new_cluster_id()
        self.nodes: list[KafkaNode] = []
        self._formatted = False
        self._lock = threading.Lock()

    # ---- addresses ----------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """Comma-separated ``host:port`` of every node's PLAINTEXT listener."""
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def sasl_bootstrap(self) -> str | None:
        """Comma-separated SASL_PLAINTEXT (SCRAM) listeners, or None without ``scram_users``."""
        if not self.scram_users:
            return None
        return ",".join(n.sasl_bootstrap or "" for n in self.nodes)

    @property
    def running_bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes if n.running)

    # ---- configuration ------------------------------------------------------------------------
    def node_config(self, node: KafkaNode) -> dict[str, Any]:
        n = self.n_nodes
        rf = min(3, n)
        isr = 2 if n >= 3 else 1
        voters = ",".join(f"{x.node_id}@{self.host}:{x.controller_port}" for x in self.nodes)
        listeners = [
            f"PLAINTEXT://{self.host}:{node.broker_port}",
            f"CONTROLLER://{self.host}:{node.controller_port}",
        ]
        advertised = [f"PLAINTEXT://{self.host}:{node.broker_port}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        cfg: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": node.data_dir,
            "num.partitions": 4,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": True,
            "delete.topic.enable": True,
            "log.segment.bytes": 8 * 1024 * 1024,
            # Tests (and benchmarks) load recorded traffic whose Kafka timestamps are its event times, months
            # before the wall clock. With the default 7-day time retention the broker deleted every segment of
            # such a topic - the active one too - at its first retention check (~30 s after start), and a
            # consumer starting later found nothing to read. Test brokers keep everything (as Tansu does).
            "log.retention.ms": -1,
            "log.retention.check.interval.ms": 60_000,
            # a killed node is fenced (and leaves every ISR) within a few seconds, not 9-30 s
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 4000,
            "replica.lag.time.max.ms": 10_000,
            "controlled.shutdown.enable": True,
            # 2 cores, up to 3 brokers: few threads
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
            "num.replica.fetchers": 1,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.threads": 1,
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        }
        if self.scram_users:
            listeners.append(f"SASL_PLAINTEXT://{self.host}:{node.sasl_port}")
            advertised.append(f"SASL_PLAINTEXT://{self.host}:{node.sasl_port}")
            protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            mech = self.scram_mechanism.lower()
            cfg["sasl.enabled.mechanisms"] = self.scram_mechanism
            cfg[f"listener.name.sasl_plaintext.{mech}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        cfg["listeners"] = ",".join(listeners)
        cfg["advertised.listeners"] = ",".join(advertised)
        cfg["listener.security.protocol.map"] = ",".join(protocol_map)
        cfg.update(self.extra_config)
        return cfg

    def _scram_args(self) -> list[str]:
        out = []
        for user, password in self.scram_users.items():
            if any(c in user + password for c in ',]"='):
                raise ValueError('SCRAM user names/passwords must not contain , ] " or =')
            out.append(f"{self.scram_mechanism}=[name={user},password={password}]")
        return out

    # ---- lifecycle ----------------------------------------------------------------------------
    def _build(self) -> None:
        java, _ = check_tools(need_mvn=self._classpath is None)
        if self._classpath is None:
            self._classpath = resolve_kafka_classpath(self.version)
        taken: set[int] = set()

        def port() -> int:
            while True:
                p = free_port(self.host)
                if p not in taken:
                    taken.add(p)
                    return p

        self.nodes = [
            KafkaNode(
                i,
                self.base_dir / f"node-{i}",
                host=self.host,
                broker_port=port(),
                controller_port=port(),
                sasl_port=port() if self.scram_users else None,
                java=java,
                classpath=self._classpath,
                heap=self.heap,
                jvm_opts=self.jvm_opts,
            )
            for i in range(1, self.n_nodes + 1)
        ]
        for node in self.nodes:
            node.write_config(self.node_config(node))

    def _format(self) -> None:
        scram = self._scram_args()
        procs = []
        for node in self.nodes:
            cmd = node.format_cmd(self.cluster_id, scram)
            procs.append((node, cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        for node, cmd, p in procs:
            try:
                out, _ = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            if p.returncode != 0:
                raise KafkaStartError(
                    f"kafka-storage format failed for node {node.node_id} (exit {p.returncode}):\n"
                    f"$ java ... {STORAGE_TOOL_MAIN} {' '.join(cmd[cmd.index(STORAGE_TOOL_MAIN) + 1 :])}\n"
                    f"{out.decode(errors='replace')[-3000:]}"
                )
        self._formatted = True

    def start(self, timeout_s: float = 60) -> KafkaCluster:
        """Resolve, format, launch all nodes and wait until the cluster serves (all brokers unfenced,
        quorum leader elected).  Raises :class:`KafkaUnavailable` (no java/mvn) or
        :class:`KafkaStartError`; on failure every started JVM is killed."""
        with self._lock:
            if not self.nodes:
                self._build()
            if not self._formatted:
                self._format()
            try:
                for node in self.nodes:
                    if not node.running:
                        node.launch()
                self.wait_ready(timeout_s)
            except BaseException:
                self._kill_all()
                raise
        return self

    def wait_ready(self, timeout_s: float = 60, nodes: Sequence[KafkaNode] | None = None) -> None:
        """Until every node in ``nodes`` (default: all running ones) answers and sees all running brokers
        unfenced and a quorum leader."""
        deadline = time.monotonic() + timeout_s
        targets = list(nodes) if nodes is not None else [n for n in self.nodes if n.running]
        expect = {n.node_id for n in self.nodes if n.running}
        last_err: str = "no attempt yet"
        pending = list(targets)
        while pending:
            node = pending[0]
            if not node.running:
                raise KafkaStartError(
                    f"Kafka node {node.node_id} exited with code {node.proc.returncode if node.proc else '?'} "
                    f"during start-up\n{node.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise KafkaStartError(
                    f"Kafka node {node.node_id} ({node.bootstrap}) not ready after {timeout_s}s: {last_err}\n"
                    f"{node.log_tail()}"
                )
            if not _port_open(node.host, node.broker_port):
                last_err = "broker port not open yet"
                time.sleep(0.2)
                continue
            try:
                state = _probe(
                    node.bootstrap, timeout_ms=max(1000, int((deadline - time.monotonic()) * 1000))
                )
            except Exception as e:  # noqa: BLE001 - any client error means "not yet"
                last_err = f"{type(e).__name__}: {e}"
                time.sleep(0.3)
                continue
            unfenced = {b for b, fenced in state["brokers"].items() if not fenced}
            if state["leader"] is None or state["leader"] < 0:
                last_err = "metadata quorum has no leader yet"
            elif not expect <= unfenced:
                last_err = f"brokers unfenced {sorted(unfenced)}, expected {sorted(expect)}"
            else:
                pending.pop(0)
                continue
            time.sleep(0.3)

    def quorum_leader(self) -> int:
        """Index (into ``nodes``) of the current KRaft quorum leader, i.e. the active controller."""
        for node in self.nodes:
            if node.running:
                leader = _probe(node.bootstrap, timeout_ms=10_000)["leader"]
                return next(i for i, x in enumerate(self.nodes) if x.node_id == leader)
        raise KafkaError("no node is running")

    def kill_node(self, i: int) -> KafkaNode:
        """SIGKILL node ``i`` (0-based index into ``nodes``; node ids are ``i + 1``)."""
        node = self.nodes[i]
        node.kill()
        return node

    def stop_node(self, i: int, timeout_s: float = 10.0) -> KafkaNode:
        node = self.nodes[i]
        node.stop(timeout_s)
        return node

    def restart_node(self, i: int, timeout_s: float = 60) -> KafkaNode:
        """(Re)launch node ``i`` on its old ports and data and wait until the cluster serves again."""
        node = self.nodes[i]
        if node.running:
            node.stop()
        node.launch()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            node.kill()
            raise
        return node

    def _kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every node at once, SIGKILL whatever is left after ``timeout_s``; idempotent."""
        for node in self.nodes:
            node.terminate()
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        self._kill_all()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        up = sum(n.running for n in self.nodes)
        return f"<KafkaCluster {self.version} nodes={self.n_nodes} running={up} bootstrap={self.bootstrap!r}>"


def _probe(bootstrap: str, timeout_ms: int) -> dict[str, Any]:
    """``{"brokers": {id: fenced}, "leader": quorum leader id}`` as seen by the node at ``bootstrap``."""
    t = min(timeout_ms, 5000)
    with warnings.catch_warnings():  # kafka-python's schema loading uses deprecated importlib.resources calls
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.admin import KafkaAdminClient  # kafka-python, imported lazily: only the probe needs it

        return _probe_once(KafkaAdminClient, bootstrap, t)


def _probe_once(admin_cls: Any, bootstrap: str, t: int) -> dict[str, Any]:
    admin = admin_cls(
        bootstrap_servers=bootstrap,
        client_id="streamproc-kafka-probe",
        request_timeout_ms=t,
        bootstrap_timeout_ms=t,
        reconnect_backoff_max_ms=500,
    )
    try:
        cluster = admin.describe_cluster()
        brokers = {int(b["broker_id"]): bool(b.get("is_fenced", False)) for b in cluster["brokers"]}
        quorum = admin.describe_metadata_quorum()
        leader = quorum["topics"][0]["partitions"][0]["leader_id"]
        return {"brokers": brokers, "leader": leader}
    finally:
        admin.close()
