"""deploy/: the image, the compose stack and the Kubernetes manifests, checked offline (no Docker engine, no
cluster): the compose file against the compose-spec schema, every manifest against the Kubernetes schemas
(kubernetes-validate), the Dockerfile with hadolint, and all of them against the code: every runtime and worker
kind runs, from the one image, with replicas, probes and budgets; every CHAT4ALL_* variable is a real setting;
the topics are created by the image's `chat4all topics`, with 3 replicas; the APIs believe forwarded addresses
from the edge only. deploy/README.md says what this does not cover."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from check_jsonschema.builtin_schemas import get_builtin_schema  # type: ignore[import-untyped]

from domain.channels import PLATFORMS
from entrypoints.settings import WORKER_KINDS, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
NGINX = DEPLOY / "compose" / "nginx.conf"
COMPOSE_PROMETHEUS = DEPLOY / "compose" / "prometheus.yml"
K8S = DEPLOY / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
OPERATIONS = ROOT / "docs" / "operations.md"

# The Kubernetes versions the manifests must be valid for: the oldest supported, and the newest the installed
# kubernetes-validate knows (so a field a newer release removes shows up when the package is updated).
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# Every worker kind but the Telegram poller, which runs only with CHAT4ALL_TELEGRAM_UPDATES=polling and then
# exactly once (deploy/README.md).
WORKERS = tuple(kind for kind in WORKER_KINDS if kind != "telegram-updates")
RUNTIMES = ("api", "grpc", *WORKERS)
# The consumer groups of each Kafka-consuming worker (entrypoints/workers/kinds.py).
GROUPS = {
    "router": {"chat4all-router"},
    "status": {"chat4all-status"},
    "push": {"chat4all-push"},
    "webhooks": {"chat4all-webhooks"},
    "channels": {f"chat4all-channel-{channel.value}" for channel in PLATFORMS},
}
METRICS_PORT = 9100
CHAT4ALL_VARIABLE = re.compile(r"\bCHAT4ALL_[A-Z0-9]+(?:_[A-Z0-9]+)*")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?([-?])([^}]*))?\}")


# -- loading -------------------------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return services[name]


def chat4all_services() -> dict[str, dict[str, Any]]:
    """The services that run the Chat4All image."""
    image = service("chat4all-api")["image"]
    return {name: s for name, s in compose()["services"].items() if s.get("image") == image}


@cache
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for path, doc in manifests() if doc["kind"] == kind and path != SECRET_EXAMPLE}


def deployment(runtime: str) -> dict[str, Any]:
    deployments = resources("Deployment")
    assert f"chat4all-{runtime}" in deployments, f"deploy/k8s has no Deployment chat4all-{runtime}"
    return deployments[f"chat4all-{runtime}"]


def containers(doc: Mapping[str, Any], *, init: bool = False) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = spec["containers"] + (spec.get("initContainers", []) if init else [])
    return found


def main_container(runtime: str) -> dict[str, Any]:
    (container,) = containers(deployment(runtime))
    return container


def config_map() -> dict[str, str]:
    data: dict[str, str] = resources("ConfigMap")["chat4all-config"]["data"]
    return data


def hpas_of(runtime: str) -> list[dict[str, Any]]:
    return [
        hpa
        for hpa in resources("HorizontalPodAutoscaler").values()
        if hpa["spec"]["scaleTargetRef"]
        == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"chat4all-{runtime}"}
    ]


def settings_variables() -> set[str]:
    return {f"CHAT4ALL_{name.upper()}" for name in Settings.model_fields}


def runtime_of(command: list[str]) -> tuple[str, ...]:
    """What a Chat4All command of deploy/ runs: ("api",), ("grpc",), ("worker", kind), ("migrate",) or
    ("topics",)."""
    if command == ["python", "-m", "entrypoints.http"]:
        return ("api",)
    if command == ["chat4all", "migrate"]:
        return ("migrate",)
    if command == ["chat4all", "topics"]:
        return ("topics",)
    if command == ["python", "-m", "entrypoints.grpc"]:
        return ("grpc",)
    if command[:3] == ["python", "-m", "entrypoints.workers"] and len(command) == 4:
        return ("worker", command[3])
    raise AssertionError(f"not a Chat4All runtime: {command}")


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """A Kubernetes container's own ``env`` (beside the ConfigMap and Secret it loads)."""
    return {e["name"]: e["value"] for e in container.get("env", [])}


def resolved(value: str, required: str = "x" * 40) -> str:
    """A compose value with its ``${VAR:-default}`` as the default, and ``${VAR:?error}`` as ``required``."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) == "-" else required, value)


def settings_from(environ: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("CHAT4ALL_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return Settings()


# -- compose -------------------------------------------------------------------------------------------------------


def test_compose_matches_the_compose_spec_schema() -> None:
    validator = jsonschema.Draft202012Validator(get_builtin_schema("vendor.compose-spec"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_compose_runs_every_runtime_and_worker_kind_from_the_one_image() -> None:
    ours = chat4all_services()
    runs = {name: runtime_of(s["command"]) for name, s in ours.items()}
    assert runs == {
        "kafka-topics": ("topics",),
        "chat4all-migrate": ("migrate",),
        "chat4all-api": ("api",),
        "chat4all-grpc": ("grpc",),
        **{f"chat4all-{kind}": ("worker", kind) for kind in WORKERS},
    }
    # One image, built once from deploy/Dockerfile with the repository as the context.
    assert {s["image"] for s in ours.values()} == {"${APP_IMAGE:-chat4all:local}"}
    assert all(s["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"} for s in ours.values())
    assert (COMPOSE.parent / ".." / "deploy" / "Dockerfile").resolve() == DOCKERFILE


def test_compose_runs_several_replicas_of_the_apis_and_of_each_worker() -> None:
    for name in [f"chat4all-{runtime}" for runtime in RUNTIMES]:
        assert service(name)["deploy"]["replicas"] >= 2, name


def test_compose_kafka_is_three_kraft_brokers_with_three_replicas_and_two_in_sync() -> None:
    brokers = {name: s for name, s in compose()["services"].items() if name.startswith("kafka-") and name[6:].isdigit()}
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    voters = {f"{i}@kafka-{i}:9093" for i in (1, 2, 3)}
    envs = [b["environment"] for b in brokers.values()]
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in envs) == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    for name, broker in brokers.items():
        env = broker["environment"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert broker["volumes"] == [f"{name}-data:{env['KAFKA_LOG_DIRS']}"]
    bootstrap = service("chat4all-api")["environment"]["CHAT4ALL_KAFKA_BOOTSTRAP"]
    assert set(bootstrap.split(",")) == {f"{name}:9092" for name in brokers}


def test_compose_creates_the_platforms_topics_before_the_apps_start(monkeypatch: pytest.MonkeyPatch) -> None:
    topics = service("kafka-topics")
    assert runtime_of(topics["command"]) == ("topics",)
    assert topics["restart"] == "no"
    env = {k: resolved(str(v)) for k, v in topics["environment"].items()}
    settings = settings_from(env, monkeypatch)
    assert settings.kafka_bootstrap == service("chat4all-api")["environment"]["CHAT4ALL_KAFKA_BOOTSTRAP"]
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    assert topics["environment"]["CHAT4ALL_KAFKA_PARTITIONS"] == "${CHAT4ALL_KAFKA_PARTITIONS:-8}"
    # It needs the brokers only: no database, no secrets.
    assert settings.database_url is None and settings.jwt_secret is None
    waits = {dep: cond["condition"] for dep, cond in topics["depends_on"].items()}
    assert waits == {f"kafka-{i}": "service_healthy" for i in (1, 2, 3)}
    for name, s in chat4all_services().items():
        if name in ("chat4all-migrate", "kafka-topics"):
            continue
        waits = {dep: cond["condition"] for dep, cond in s["depends_on"].items()}
        assert waits["kafka-topics"] == waits["chat4all-migrate"] == "service_completed_successfully", name
        assert waits["postgres"] == waits["redis"] == "service_healthy", name


def test_compose_long_running_services_have_healthchecks() -> None:
    for name, s in compose()["services"].items():
        if s.get("restart") == "no":  # one-shot: migrations, topics
            continue
        assert s.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "/health/ready" in " ".join(service("chat4all-api")["healthcheck"]["test"])
    assert "HealthStub" in " ".join(service("chat4all-grpc")["healthcheck"]["test"])
    for kind in WORKERS:
        test = " ".join(service(f"chat4all-{kind}")["healthcheck"]["test"])
        assert f"127.0.0.1:{METRICS_PORT}/health/live" in test, kind


def test_compose_grpc_and_workers_serve_their_metrics_port_and_the_api_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for runtime in ("grpc", *WORKERS):
        s = service(f"chat4all-{runtime}")
        settings = settings_from({k: resolved(str(v)) for k, v in s["environment"].items()}, monkeypatch)
        assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", METRICS_PORT), runtime
    api = service("chat4all-api")
    assert "CHAT4ALL_METRICS_PORT" not in api["environment"]
    assert str(METRICS_PORT) in service("chat4all-grpc")["expose"]


def test_compose_grpc_healthcheck_is_a_python_program() -> None:
    test = service("chat4all-grpc")["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "healthcheck", "exec")


def test_compose_has_the_backing_services_and_uses_them() -> None:
    services = compose()["services"]
    for name, image in {
        "postgres": "postgres:",
        "redis": "redis:",
        "minio": "minio/minio:",
        "prometheus": "prom/prometheus:",
        "grafana": "grafana/grafana:",
        "edge": "nginx",
    }.items():
        assert image in services[name]["image"], name
    env = service("chat4all-api")["environment"]
    assert env["CHAT4ALL_STORAGE"] == "s3"
    assert resolved(env["CHAT4ALL_S3_ENDPOINT"]) == "minio:9000"
    # Links name MinIO as published on the host, where a browser there reaches it.
    assert resolved(env["CHAT4ALL_S3_PUBLIC_ENDPOINT"]) == "localhost:9000"
    assert "127.0.0.1:9000:9000" in service("minio")["ports"]
    assert "@postgres:5432/" in env["CHAT4ALL_DATABASE_URL"]
    assert "@redis:6379/" in env["CHAT4ALL_REDIS_URL"]


def test_compose_files_it_mounts_exist() -> None:
    for name, s in compose()["services"].items():
        for volume in s.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"


def test_compose_settings_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, s in chat4all_services().items():
        if name == "kafka-topics":  # its own few settings (above)
            continue
        env = {k: resolved(str(v)) for k, v in s["environment"].items()}
        settings = settings_from(env, monkeypatch)
        assert settings.database_url is not None, name
        assert settings.kafka_bootstrap is not None, name
        assert settings.redis_url is not None, name
        assert settings.rate_limiting and settings.rate_limits == {}, name  # the anonymous limit included


def test_compose_apis_believe_forwarded_addresses_from_the_edge_only(monkeypatch: pytest.MonkeyPatch) -> None:
    (network,) = compose()["networks"]["default"]["ipam"]["config"]
    subnet, handed_out = ipaddress.ip_network(network["subnet"]), ipaddress.ip_network(network["ip_range"])
    edge = ipaddress.ip_address(service("edge")["networks"]["default"]["ipv4_address"])
    # The edge's address is fixed, and no other container can be given it.
    assert edge in subnet and edge not in handed_out and handed_out.subnet_of(subnet)  # type: ignore[arg-type]
    for name in ("chat4all-api", "chat4all-grpc", *(f"chat4all-{kind}" for kind in WORKERS)):
        env = {k: resolved(str(v)) for k, v in service(name)["environment"].items()}
        assert settings_from(env, monkeypatch).forwarded_allow_ips == str(edge), name
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in NGINX.read_text()


def test_env_example_names_every_variable_compose_reads() -> None:
    text = COMPOSE.read_text()
    required = {m.group(1) for m in INTERPOLATION.finditer(text) if m.group(2) == "?"}
    optional = {m.group(1) for m in INTERPOLATION.finditer(text) if m.group(2) == "-"}
    lines = ENV_EXAMPLE.read_text().splitlines()
    given = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z0-9_]+=", line))
    commented = {m.group(1) for line in lines if (m := re.match(r"^# ([A-Z0-9_]+)=", line))}
    assert required <= set(given), required - set(given)
    assert optional - required <= commented, optional - required - commented
    secrets = {name for name in given if re.search("PASSWORD|SECRET", name)}
    assert secrets and all("CHANGE-ME" in given[name] for name in secrets)


def test_nginx_sends_to_the_compose_services_and_limits_anonymous_calls() -> None:
    conf = NGINX.read_text()
    assert "http://chat4all-api:8000" in conf
    assert "grpc://chat4all-grpc:50051" in conf
    assert re.search(r"location ~ \^/\(auth/token\|auth/refresh\|v1/users\)\$ \{\s*limit_req zone=anonymous", conf)
    assert service("edge")["volumes"] == ["./compose/nginx.conf:/etc/nginx/nginx.conf:ro"]


def test_compose_prometheus_scrapes_every_replica_of_every_runtime() -> None:
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (api,) = jobs["chat4all"]["dns_sd_configs"]
    assert (api["names"], api["port"]) == (["chat4all-api"], 8000)
    (runtimes,) = jobs["chat4all-runtimes"]["dns_sd_configs"]
    assert sorted(runtimes["names"]) == sorted(f"chat4all-{r}" for r in RUNTIMES if r != "api")
    assert runtimes["port"] == METRICS_PORT
    mounted = {Path(v.split(":")[1]).name for v in service("prometheus")["volumes"] if v.startswith(".")}
    assert set(config["rule_files"]) <= mounted


# -- Kubernetes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifest_matches_the_kubernetes_schemas(path: Path, version: str) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_k8s_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS if p != SECRET_EXAMPLE)
    assert kustomization["namespace"] == "chat4all"
    assert [image["name"] for image in kustomization["images"]] == ["chat4all"]
    for path, doc in manifests():
        assert doc["metadata"].get("namespace", "chat4all") == "chat4all", path.name


def test_k8s_secret_example_holds_placeholders_only() -> None:
    (secret,) = [doc for path, doc in manifests() if path == SECRET_EXAMPLE]
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "chat4all-secrets"
    assert secret["stringData"]
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())


def test_k8s_runs_every_runtime_and_worker_kind_from_the_one_image() -> None:
    runs = {
        name: runtime_of(d["spec"]["template"]["spec"]["containers"][0]["command"])
        for name, d in resources("Deployment").items()
    }
    assert runs == {
        "chat4all-api": ("api",),
        "chat4all-grpc": ("grpc",),
        **{f"chat4all-{kind}": ("worker", kind) for kind in WORKERS},
    }
    for name, doc in resources("Deployment").items():
        for container in containers(doc, init=True):
            assert container["image"] == "chat4all", name
            refs = [ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]]
            assert refs == ["chat4all-config", "chat4all-secrets"], name
        (init,) = doc["spec"]["template"]["spec"]["initContainers"]
        assert runtime_of(init["command"]) == ("migrate",), name


def test_k8s_pods_run_unprivileged() -> None:
    for name, doc in resources("Deployment").items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        for container in containers(doc, init=True):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name


def test_k8s_deployments_have_probes_on_the_right_endpoints() -> None:
    api = main_container("api")
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert {p["name"]: p["containerPort"] for p in api["ports"]} == {"http": 8000}
    grpc = main_container("grpc")
    assert grpc["readinessProbe"]["grpc"]["port"] == 50051
    assert grpc["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}
    assert grpc["startupProbe"]["tcpSocket"]["port"] == "grpc"
    for kind in WORKERS:
        worker = main_container(kind)
        for probe in ("livenessProbe", "readinessProbe"):
            assert worker[probe]["httpGet"] == {"path": "/health/live", "port": "metrics"}, kind
        assert {p["name"]: p["containerPort"] for p in worker["ports"]} == {"metrics": METRICS_PORT}, kind


def test_k8s_grpc_and_workers_serve_their_metrics_port_and_the_api_does_not() -> None:
    for runtime in ("grpc", *WORKERS):
        env = container_env(main_container(runtime))
        assert env == {"CHAT4ALL_METRICS_HOST": "0.0.0.0", "CHAT4ALL_METRICS_PORT": str(METRICS_PORT)}, runtime
        assert set(env) <= settings_variables()
    assert container_env(main_container("api")) == {}
    assert "CHAT4ALL_METRICS_PORT" not in config_map()


def test_k8s_pods_are_scraped_where_they_serve_metrics() -> None:
    for runtime in RUNTIMES:
        annotations = deployment(runtime)["spec"]["template"]["metadata"]["annotations"]
        port = 8000 if runtime == "api" else METRICS_PORT
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
        assert port in [p["containerPort"] for p in main_container(runtime)["ports"]], runtime


def test_k8s_containers_request_cpu_and_memory() -> None:
    for name, doc in resources("Deployment").items():
        for container in containers(doc, init=True):
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), f"{name}/{container['name']}"
            assert "memory" in container["resources"]["limits"], f"{name}/{container['name']}"


def test_k8s_every_deployment_has_a_disruption_budget() -> None:
    budgets = resources("PodDisruptionBudget")
    for name, doc in resources("Deployment").items():
        pods = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= pods.items(), name
        covering = [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= pods.items()]
        assert len(covering) == 1, name
        assert covering[0]["spec"] == {"maxUnavailable": 1, "selector": doc["spec"]["selector"]}, name


def test_k8s_every_runtime_keeps_at_least_two_replicas() -> None:
    for runtime in RUNTIMES:
        doc = deployment(runtime)
        hpas = hpas_of(runtime)
        if hpas:
            assert "replicas" not in doc["spec"], f"{runtime}: the HPA owns the replica count"
            assert [h["spec"]["minReplicas"] for h in hpas] >= [2], runtime
        else:
            assert doc["spec"]["replicas"] >= 2, runtime


def test_k8s_apis_scale_on_cpu() -> None:
    for runtime in ("api", "grpc"):
        (hpa,) = hpas_of(runtime)
        assert {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        } in hpa["spec"]["metrics"]


def test_k8s_consumers_scale_on_cpu_and_on_their_groups_lag() -> None:
    partitions = int(config_map()["CHAT4ALL_KAFKA_PARTITIONS"])
    for kind, groups in GROUPS.items():
        (hpa,) = hpas_of(kind)
        types = [m["type"] for m in hpa["spec"]["metrics"]]
        assert sorted(types) == ["External", "Resource"], kind
        (external,) = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
        assert external["metric"]["name"] == "chat4all_consumer_lag"
        selector = external["metric"]["selector"]
        selected = (
            {selector["matchLabels"]["group"]}
            if "matchLabels" in selector
            else set(selector["matchExpressions"][0]["values"])
        )
        assert selected == groups, kind
        assert external["target"]["type"] == "AverageValue"
        # A replica beyond the partition count would sit idle.
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions, kind


def test_k8s_consumer_groups_are_the_workers_groups() -> None:
    source = (ROOT / "entrypoints" / "workers" / "kinds.py").read_text()
    literal = set(re.findall(r'"(chat4all-[a-z]+)"', source))
    assert literal == set().union(*(g for k, g in GROUPS.items() if k != "channels"))
    assert 'f"chat4all-channel-{channel.value}"' in source


def test_k8s_external_metrics_are_served_by_the_adapter_and_defined_by_the_app() -> None:
    from entrypoints.workers.metrics import OUTBOX_BACKLOG
    from entrypoints.workers.runner import CONSUMER_LAG

    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    served = {rule["name"]["as"]: rule for rule in values["rules"]["external"]}
    used = {
        m["external"]["metric"]["name"]
        for hpa in resources("HorizontalPodAutoscaler").values()
        for m in hpa["spec"]["metrics"]
        if m["type"] == "External"
    }
    assert used == set(served) == {CONSUMER_LAG._name, OUTBOX_BACKLOG._name}
    for name, rule in served.items():
        assert rule["seriesQuery"].startswith(name + "{"), name
        assert "<<.LabelMatchers>>" in rule["metricsQuery"], name
    assert "by (group)" in served["chat4all_consumer_lag"]["metricsQuery"]


def test_k8s_every_hpa_targets_an_existing_deployment() -> None:
    deployments = set(resources("Deployment"))
    for name, hpa in resources("HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments, name


def test_k8s_services_select_the_api_pods() -> None:
    services = resources("Service")
    assert services["chat4all-api"]["spec"]["selector"] == deployment("api")["spec"]["selector"]["matchLabels"]
    assert services["chat4all-api"]["spec"]["ports"][0]["targetPort"] == "http"
    for name in ("chat4all-grpc", "chat4all-grpc-headless"):
        assert services[name]["spec"]["selector"] == deployment("grpc")["spec"]["selector"]["matchLabels"]
        assert services[name]["spec"]["ports"][0]["targetPort"] == "grpc"


def test_k8s_topics_job_runs_chat4all_topics_with_three_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    (job,) = resources("Job").values()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "chat4all"
    assert runtime_of(container["command"]) == ("topics",)
    assert "args" not in container
    assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == ["chat4all-config"]
    assert container_env(container) == {
        "CHAT4ALL_KAFKA_REPLICATION_FACTOR": "3",
        "CHAT4ALL_KAFKA_MIN_INSYNC_REPLICAS": "2",
    }
    settings = settings_from({**config_map(), **container_env(container)}, monkeypatch)
    assert settings.kafka_bootstrap == config_map()["CHAT4ALL_KAFKA_BOOTSTRAP"]
    assert settings.kafka_partitions == int(config_map()["CHAT4ALL_KAFKA_PARTITIONS"])
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_k8s_settings_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    (secret,) = [doc for path, doc in manifests() if path == SECRET_EXAMPLE]
    settings = settings_from({**config_map(), **secret["stringData"]}, monkeypatch)
    assert settings.storage == "s3"
    assert settings.http_workers == 1
    assert settings.rate_limiting and settings.rate_limits == {}  # the anonymous limit included
    # Behind the ingress: its pods' addresses are trusted with X-Forwarded-For.
    assert settings.forwarded_allow_ips is not None
    assert settings.s3_public_endpoint is not None and settings.s3_public_endpoint != settings.s3_endpoint


# -- both, and the image -----------------------------------------------------------------------------------------


def deploy_texts() -> Iterator[tuple[Path, str]]:
    for path in [COMPOSE, ENV_EXAMPLE, DOCKERFILE, NGINX, COMPOSE_PROMETHEUS, *MANIFESTS, ADAPTER_VALUES]:
        yield path, path.read_text()
    for path in [DEPLOY / "README.md", OPERATIONS, *sorted((DEPLOY / "compose").glob("*.yml"))]:
        yield path, path.read_text()


def test_every_chat4all_variable_is_a_setting() -> None:
    known = settings_variables()
    used = {
        (path.relative_to(ROOT).as_posix(), m.group(0))
        for path, text in deploy_texts()
        for m in CHAT4ALL_VARIABLE.finditer(text)
    }
    assert {name for _, name in used} >= {"CHAT4ALL_DATABASE_URL", "CHAT4ALL_KAFKA_BOOTSTRAP", "CHAT4ALL_JWT_SECRET"}
    assert sorted((path, name) for path, name in used if name not in known) == []


def test_operations_configuration_reference_covers_every_setting() -> None:
    documented = set(
        CHAT4ALL_VARIABLE.findall(OPERATIONS.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0])
    )
    assert sorted(settings_variables() - documented) == []


def test_k8s_and_compose_keys_are_settings() -> None:
    known = settings_variables()
    keys = set(config_map())
    (secret,) = [doc for path, doc in manifests() if path == SECRET_EXAMPLE]
    keys |= set(secret["stringData"])
    for s in chat4all_services().values():
        keys |= set(s["environment"])
    assert keys - known == set()


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, "")


def test_dockerfile_builds_one_nonroot_image_from_the_lock_file() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.MULTILINE)
    assert [alias for _, alias in stages] == ["web", "python", ""]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-", text, re.MULTILINE)
    assert "RUN npm ci" in text
    assert "RUN npm run build" in text
    assert "uv sync --locked --no-dev --no-install-project" in text
    assert "uv sync --locked --no-dev --no-editable" in text
    assert "--all-extras" not in text  # the `embedded` servers stay out of production images
    assert "COPY --from=web /src/web/dist /app/web/dist" in text
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user.split(":")[0] not in ("root", "0")
    assert re.search(r'^CMD \["python", "-m", "entrypoints\.http"\]$', text, re.MULTILINE)
    make_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert make_uv is not None
    assert f"ARG UV_VERSION={make_uv.group(1)}" in text


def test_dockerfile_environment_points_at_the_image_paths() -> None:
    text = DOCKERFILE.read_text()
    env = dict(re.findall(r"(CHAT4ALL_[A-Z_]+)=(\S+)", text))
    assert env == {
        "CHAT4ALL_HOST": "0.0.0.0",
        "CHAT4ALL_DATA_DIR": "/var/lib/chat4all",
        "CHAT4ALL_WEB_DIR": "/app/web/dist",
        "CHAT4ALL_LOG_FORMAT": "json",
    }


def test_dockerignore_lets_in_only_what_the_image_copies() -> None:
    lines = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src.split("/")[0]
        for srcs in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
        for src in srcs.split()
    }
    assert copied == allowed
    assert {"web/node_modules/", "web/dist/", "**/.env"} <= set(lines)


def test_worker_command_runs_the_worker_entrypoint() -> None:
    """The command deploy/ starts workers with really reaches the workers' argument parser (--help instead of a
    kind, so nothing connects anywhere)."""
    command = service("chat4all-router")["command"]
    result = subprocess.run(
        [sys.executable, *command[1:-1], "--help"], capture_output=True, text=True, check=False, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m entrypoints.workers")
    for kind in WORKERS:
        assert kind in result.stdout
