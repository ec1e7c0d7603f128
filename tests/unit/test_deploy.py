"""deploy/: every manifest parses, and every STREAMPROC_* variable the manifests give a worker is one
streamproc knows and a value ``Settings.from_env`` accepts (secrets stubbed, TLS file paths pointed at
stand-in files). No Docker engine or cluster is needed: this checks the configuration, not a run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streamproc.settings import ENV_VARS, SECRET_ENV_VARS, Settings

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
STUB_SECRET = "stub-secret-0123456789abcdef"
FILE_VARS = ("STREAMPROC_KAFKA_SSL_CAFILE", "STREAMPROC_KAFKA_SSL_CERTFILE", "STREAMPROC_KAFKA_SSL_KEYFILE")
_COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _is_known(var: str) -> bool:
    return var in ENV_VARS or var.startswith("STREAMPROC_DETECT_")


def _validate(env: dict[str, str], tmp_path: Path, where: str) -> Settings:
    """``Settings.from_env`` on a worker's environment with secrets stubbed and TLS files present."""
    env = dict(env)
    for var in SECRET_ENV_VARS:
        if var in env:
            env[var] = STUB_SECRET
    for var in FILE_VARS:
        if var in env:
            stand_in = tmp_path / var.lower()
            stand_in.write_text("stand-in for " + env[var])
            env[var] = str(stand_in)
    unknown = sorted(v for v in env if v.startswith("STREAMPROC_") and not _is_known(v))
    assert not unknown, f"{where}: unknown variables {unknown}"
    return Settings.from_env(env)


def test_there_are_manifests() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"compose.yaml", "prometheus.yml", "k8s/statefulset.yaml", "k8s/configmap.yaml", "k8s/secret.yaml",
            "k8s/service.yaml"} <= names
    assert (DEPLOY / "Dockerfile").exists()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses(path: Path) -> None:
    assert _docs(path)


# -- docker compose -------------------------------------------------------------------------------------


def _compose_value(value: Any) -> str:
    """A compose environment value with ``${VAR:-default}`` / ``${VAR:?error}`` interpolated as compose
    would with VAR unset (defaults taken; required ones stubbed)."""
    def sub(m: re.Match[str]) -> str:
        return STUB_SECRET if m.group(2) == "?" else (m.group(3) or "")

    return _COMPOSE_VAR.sub(sub, str(value))


def _compose_workers() -> dict[str, dict[str, str]]:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    workers = {}
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        if any(k.startswith("STREAMPROC_") for k in env):
            workers[name] = {k: _compose_value(v) for k, v in env.items()}
    return workers


def test_compose_runs_three_kraft_brokers_two_workers_and_prometheus() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    brokers = [s for s in services.values() if str(s.get("image", "")).startswith("apache/kafka:4.")
               and "KAFKA_NODE_ID" in (s.get("environment") or {})]
    assert len(brokers) == 3
    assert {b["environment"]["KAFKA_PROCESS_ROLES"] for b in brokers} == {"broker,controller"}
    workers = _compose_workers()
    assert len(workers) == 2
    for name in workers:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert any(str(v).endswith(":/var/lib/streamproc/data") for v in svc["volumes"])
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:6066" for name in workers}


def test_compose_worker_environment_is_valid(tmp_path: Path) -> None:
    for name, env in _compose_workers().items():
        s = _validate(env, tmp_path, f"compose.yaml {name}")
        assert s.store == "rocksdb://" and s.broker and len(s.broker.split(",")) == 3
        assert s.web_port == 6066


def test_compose_creates_the_topics_with_the_workers_partition_count() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    script = "\n".join(compose["services"]["topics"]["command"])
    partitions = {env["STREAMPROC_PARTITIONS"] for env in _compose_workers().values()}
    assert len(partitions) == 1
    n = partitions.pop()
    settings = Settings.from_env({"STREAMPROC_PARTITIONS": n})
    from streamproc.broker import topic_specs

    for topic, *_ in topic_specs(settings):
        assert topic in script, topic
    assert f'create "$$t" {n}' in script and "--replication-factor 3" in script


# -- Kubernetes -----------------------------------------------------------------------------------------


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _docs(path):
            if "kind" in doc and "metadata" in doc:
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_k8s_workers_are_a_statefulset_with_volumes_probes_config_and_secrets(tmp_path: Path) -> None:
    objs = _k8s()
    sts = objs[("StatefulSet", "streamproc")]
    spec = sts["spec"]
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert ("Service", spec["serviceName"]) in objs
    (container,) = spec["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert any(m["name"] == "data" for m in container["volumeMounts"])

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objs[("ConfigMap", source["configMapRef"]["name"])]["data"])
        if "secretRef" in source:
            secret = objs[("Secret", source["secretRef"]["name"])]
            keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
            assert keys <= set(SECRET_ENV_VARS), f"non-secret settings in the Secret: {keys - set(SECRET_ENV_VARS)}"
            env.update({k: STUB_SECRET for k in keys})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    config = objs[("ConfigMap", "streamproc-config")]["data"]
    assert not set(config) & set(SECRET_ENV_VARS), "secrets belong in the Secret, not the ConfigMap"
    s = _validate(env, tmp_path, "k8s StatefulSet")
    assert s.store == "rocksdb://" and s.data_dir == container["volumeMounts"][0]["mountPath"]
    assert s.kafka_security_protocol == "SASL_SSL" and s.kafka_sasl_password == STUB_SECRET
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(config["STREAMPROC_KAFKA_SSL_CAFILE"].startswith(m + "/") for m in mounted)


def test_services_select_the_worker_pods() -> None:
    objs = _k8s()
    labels = objs[("StatefulSet", "streamproc")]["spec"]["template"]["metadata"]["labels"]
    services = [o for (kind, _n), o in objs.items() if kind == "Service"]
    assert services
    for svc in services:
        assert svc["spec"]["selector"].items() <= labels.items()
