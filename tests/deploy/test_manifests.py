"""The deployment files, checked offline: the compose file against the Compose Specification's
schema (vendored in check-jsonschema), the Kubernetes manifests against Kubernetes' own schemas
(kubernetes-validate, strict), the Dockerfiles with hadolint; then what the schemas cannot see:
health-gated start order, replicas, probes on /healthz and /readyz, pinned dependencies.

Each validator is also shown a broken file, so a green run means it really looked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
INFRA = ("postgres", "rabbitmq")  # built from Debian's packages for `make up`
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
SERVICES = ("gateway", "router", "notifier")
PORTS = {"gateway": 8080, "router": 8081, "notifier": 8082}


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)


def k8s_documents() -> list[dict]:
    return [doc for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


# -- compose -----------------------------------------------------------------------------------

def test_compose_file_matches_the_compose_specification(tmp_path) -> None:
    ok = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["router"]["depends_on"]["rabbitmq"]["condition"] = "service_healty"  # a typo
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    bad = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", tmp_path / "compose.yml")
    assert bad.returncode != 0 and "'service_healty' is not one of" in bad.stdout, bad.stdout


def test_compose_starts_in_health_gated_order_with_replicas_and_volumes() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"rabbitmq", "postgres", *SERVICES}
    for infra in INFRA:
        # Built here from Debian's packages (deploy/images.sh): `make up` pulls nothing.
        assert services[infra]["image"] == f"switchboard-{infra}:${{TAG:-dev}}", infra
        assert services[infra]["build"]["dockerfile"] == f"deploy/docker/{infra}.Dockerfile"
        assert services[infra]["healthcheck"]["test"], infra
        assert any(v.split(":")[0] in compose["volumes"] for v in services[infra]["volumes"]), infra
    for svc in SERVICES:
        spec = services[svc]
        assert spec["build"]["dockerfile"] == f"deploy/docker/{svc}.Dockerfile"
        # The images carry their HEALTHCHECK; every dependency is waited for until healthy.
        assert all(dep["condition"] == "service_healthy" for dep in spec["depends_on"].values()), svc
        assert {"rabbitmq"} <= set(spec["depends_on"])
        assert spec["stop_grace_period"] == "30s"
        env = spec["environment"]
        assert env["BROKER_URL"].startswith("amqp://") and env["DATABASE_URL"].startswith("postgresql://")
    for consumer in ("router", "notifier"):
        assert services[consumer]["deploy"]["replicas"] >= 2
        assert "postgres" in services[consumer]["depends_on"]
    assert set(services["gateway"]["depends_on"]) >= {"router", "notifier"}
    assert "gateway-spool:/var/lib/switchboard" in services["gateway"]["volumes"]


# -- Dockerfiles -------------------------------------------------------------------------------

def test_dockerfiles_pass_hadolint(tmp_path) -> None:
    assert [p.stem for p in DOCKERFILES] == sorted(SERVICES + INFRA)
    ok = run(BIN / "hadolint", *DOCKERFILES)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN pip install flask\nCMD python -m services.router\n")
    bad = run(BIN / "hadolint", sloppy)
    assert bad.returncode != 0 and "DL3006" in bad.stdout  # untagged base image


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_is_multi_stage_pinned_non_root_with_a_healthcheck(service) -> None:
    text = (DEPLOY / "docker" / f"{service}.Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions.count("FROM") == 2 and "COPY --from=build" in text
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "-r /tmp/requirements.lock" in text and "--no-deps /src" in text
    assert "USER 10001:10001" in text and "HEALTHCHECK" in instructions
    assert f'ENTRYPOINT ["python3", "-m", "services.{service}"]' in text
    assert f"EXPOSE {PORTS[service]}" in text


def test_the_lock_pins_every_dependency_of_the_project() -> None:
    import tomllib

    declared = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    pins = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    for req in declared:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} is not in deploy/requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{req.name}=={pins[name]} does not satisfy {req}: run `make lock`"


# -- Kubernetes --------------------------------------------------------------------------------

def test_kubernetes_manifests_match_the_kubernetes_schemas(tmp_path) -> None:
    ok = run(BIN / "kubernetes-validate", "--strict", "--quiet", *K8S)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The ConfigMap the kustomization generates from the one config file, validated too.
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "switchboard-config"},
                 "data": {"switchboard.yaml": (DEPLOY / "switchboard.yaml").read_text()}}
    (tmp_path / "configmap.yaml").write_text(yaml.safe_dump(configmap))
    assert run(BIN / "kubernetes-validate", "--strict", "--quiet", tmp_path / "configmap.yaml").returncode == 0
    router = (DEPLOY / "k8s" / "router.yaml").read_text().split("\n---\n")[0]
    wrong_type = yaml.safe_load(router)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] = 42
    unknown_field = yaml.safe_load(router)
    unknown_field["spec"]["replica"] = 2  # strict: a misspelt field is an error, not ignored
    for name, doc in (("wrong_type", wrong_type), ("unknown_field", unknown_field)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
        bad = run(BIN / "kubernetes-validate", "--strict", tmp_path / f"{name}.yaml")
        assert bad.returncode != 0 and "did not validate" in bad.stdout + bad.stderr, name


def test_kustomization_brings_every_manifest_and_the_config() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file(), resource
    [generator] = kustomization["configMapGenerator"]
    assert generator["name"] == "switchboard-config" and generator["files"] == ["switchboard.yaml"]
    # The example Secret is documentation: real credentials are never applied from the repository.
    assert "k8s/secret.example.yaml" not in kustomization["resources"]


@pytest.mark.parametrize("service", SERVICES)
def test_workloads_have_probes_resources_secrets_and_run_as_non_root(service) -> None:
    docs = k8s_documents()
    [workload] = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == service]
    [svc] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == service]
    pod = workload["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == PORTS[service]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["terminationGracePeriodSeconds"] >= 30
    env = {e["name"]: e for e in container["env"]}
    for secret in ("BROKER_URL", "DATABASE_URL"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "switchboard-credentials"
        assert "optional" not in env[secret]["valueFrom"]["secretKeyRef"]
    assert env["TELEGRAM_BOT_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert not any("value" in e and ("PASSWORD" in e["name"] or "TOKEN" in e["name"]) for e in container["env"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/switchboard"
    assert {v["name"]: v for v in pod["volumes"]}["config"]["configMap"]["name"] == "switchboard-config"
    assert svc["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
    assert workload["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    if service in ("router", "notifier"):
        assert workload["kind"] == "Deployment" and workload["spec"]["replicas"] >= 2
    else:
        # Each gateway replica keeps its own spool across restarts.
        assert workload["kind"] == "StatefulSet" and mounts["spool"] == "/var/lib/switchboard"
        assert workload["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "spool"


def test_kubernetes_rabbitmq_is_the_cluster_chaos_proves() -> None:
    """Node count, partition handling and client URLs as `make cluster-up` runs them and
    `CLUSTER=1 make chaos` proves them (deploy/local-cluster.sh); the queue types are the code's."""
    [cluster] = yaml.safe_load_all((DEPLOY / "k8s-rabbitmq" / "rabbitmq-cluster.yaml").read_text())
    assert cluster["kind"] == "RabbitmqCluster" and cluster["spec"]["replicas"] == 3
    config = dict(line.split(" = ") for line in cluster["spec"]["rabbitmq"]["additionalConfig"].splitlines() if line)
    local = (DEPLOY / "local-cluster.sh").read_text()
    assert local.count("\nNODES=(1 2 3)") == 1
    for key in ("cluster_partition_handling", "net_ticktime"):
        assert f"{key} = {config[key]}\n" in local, key
    assert config["cluster_partition_handling"] == "pause_minority"
    [secret] = yaml.safe_load_all((DEPLOY / "k8s" / "secret.example.yaml").read_text())
    nodes = secret["stringData"]["BROKER_URL"].split(";")
    assert len(nodes) == 3 and all(n.startswith("amqp://") and n.endswith("/switchboard") for n in nodes)
    assert len({n.split("@")[1].split(".")[0] for n in nodes}) == 3  # three different pods
