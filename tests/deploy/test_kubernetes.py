"""The kustomize base in deploy/kubernetes: valid for a pinned Kubernetes, consistent, and runnable as written.

No cluster exists here. kubernetes-validate checks every resource against the OpenAPI schemas of
Kubernetes 1.30 (bundled, strict: unknown fields are errors). The rest is checked against chainer itself:
commands and options through its click CLI, variables through its settings, probes by running `chainer
web` and `chainer worker` with the containers' environment and volumes laid out as the kubelet does,
and redis.conf by running redis-server with it.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml

import chainer
from chainer.worker import WorkerSettings
from tests.deploy.processes import chainer as run_chainer
from tests.deploy.processes import config, redis_with
from tests.deploy.support import (
    COMPOSE,
    DEPLOY,
    KUBERNETES,
    KUBERNETES_VERSION,
    REPO,
    chainer_env,
    check_variable,
    empty_file_means_unset,
    get,
    known_variables,
    load_yaml_documents,
    parse_cli,
    pod_spec,
    resource,
    resources,
)
from tests.redis_server import free_port

BIN = Path(sys.executable).parent
WORKLOADS = ("Deployment", "StatefulSet")


def _workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in resources() if doc["kind"] in WORKLOADS]


def _chainer_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container that runs the chainer image."""
    return [
        (workload, container)
        for workload in _workloads()
        for container in pod_spec(workload)["containers"]
        if container["image"] == "chainer"
    ]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_every_resource_is_valid_for_the_pinned_kubernetes_version_in_strict_mode() -> None:
    """kubernetes-validate (offline schemas) accepts every resource of the base; it refuses broken ones."""
    validated = []
    for path, doc in resources():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc}")
        validated.append(doc["kind"])
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "Ingress",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
    } <= set(validated)

    broken = copy.deepcopy(resource("Deployment", "chainer-web"))
    pod_spec(broken)["containers"][0]["readinessProbes"] = pod_spec(broken)["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(resource("Deployment", "chainer-web"))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_tags_the_image_with_the_release() -> None:
    """resources: exactly the YAML files beside it; images: the chainer image at chainer.__version__."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    images = {image["name"]: image for image in kustomization["images"]}
    assert images["chainer"]["newTag"] == chainer.__version__
    assert {c["image"] for _, c in _chainer_containers()} == {"chainer"}
    assert {w["metadata"]["name"] for w, _ in _chainer_containers()} == {"chainer-web", "chainer-worker"}


def test_every_command_is_a_chainer_command_and_every_variable_one_chainer_reads(tmp_path: Path) -> None:
    """command/args parse with chainer's own CLI (options and their types); CHAINER_* names exist in chainer."""
    known = known_variables()
    commands = set()
    for workload, container in _chainer_containers():
        argv = [*container.get("command", []), *container.get("args", [])]
        commands.add((workload["metadata"]["name"], parse_cli(argv)[0]))
        for variable in container.get("env", []):
            check_variable(variable["name"], tmp_path, known)
        assert "envFrom" not in container, "every variable is listed by name, so it can be checked"
    assert commands == {("chainer-web", "web"), ("chainer-worker", "worker")}


def test_web_runs_two_replicas_with_probes_on_the_port_it_listens_on() -> None:
    """2 replicas; readiness GET /readyz, liveness GET /healthz, on the named port that `--port` opens."""
    web = resource("Deployment", "chainer-web")
    assert web["spec"]["replicas"] == 2
    (container,) = pod_spec(web)["containers"]
    _, params = parse_cli(container["command"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == params["port"]
    assert params["host"] == "0.0.0.0"  # reachable from the kubelet and the Service


def test_every_container_has_requests_limits_and_a_locked_down_security_context() -> None:
    """Non-root (the image's uid for chainer), read-only root, no privilege escalation, no capabilities, seccomp."""
    dockerfile_user = re.findall(r"^USER (\d+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)[-1]
    for workload in _workloads():
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            if container["image"] == "chainer":
                assert str(pod["runAsUser"]) == dockerfile_user, name
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, (name, kind)
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name


def test_disruption_budget_service_and_ingress_reach_the_web_pods_only() -> None:
    """The PDB and the Service select web pods (not workers); the Ingress publishes only /hooks through the Service."""
    web, worker = resource("Deployment", "chainer-web"), resource("Deployment", "chainer-worker")
    pdb = resource("PodDisruptionBudget", "chainer-web")
    assert pdb["spec"]["minAvailable"] >= 1 and pdb["spec"]["minAvailable"] < web["spec"]["replicas"]
    for selector in (pdb["spec"]["selector"]["matchLabels"], resource("Service", "chainer-web")["spec"]["selector"]):
        assert _selects(selector, _pod_labels(web)) and not _selects(selector, _pod_labels(worker))
    service = resource("Service", "chainer-web")
    container_ports = {p["name"] for p in pod_spec(web)["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    ingress = resource("Ingress", "chainer")
    assert ingress["spec"]["tls"], "providers deliver to https only"
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "chainer-web"
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
            assert path["path"] == "/hooks", "the operator API is not published"


def test_worker_termination_grace_is_longer_than_a_job_can_run() -> None:
    """terminationGracePeriodSeconds > arq's job timeout and its job_completion_wait (drain without kills)."""
    grace = pod_spec(resource("Deployment", "chainer-worker"))["terminationGracePeriodSeconds"]
    assert grace > WorkerSettings.job_timeout and grace > WorkerSettings.job_completion_wait


def test_rules_come_from_the_configmap_as_a_directory_mount() -> None:
    """CHAINER_RULES lies in a ConfigMap volume mounted without subPath (updates reach it); the rules lint."""
    configmap = resource("ConfigMap", "chainer-rules")
    for workload, container in _chainer_containers():
        env = {v["name"]: v.get("value") for v in container["env"]}
        rules = Path(env["CHAINER_RULES"])
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(rules.parent)]
        assert "subPath" not in mount and "subPathExpr" not in mount, "a subPath mount never sees updates"
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["configMap"]["name"] == "chainer-rules"
        assert rules.name in configmap["data"]
    assert configmap["data"]["rules.yaml"] == (DEPLOY / "rules" / "rules.yaml").read_text()
    lint = subprocess.run(
        [str(BIN / "chainer"), "lint", str(DEPLOY / "rules" / "rules.yaml")], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _secret_keys_in_readme() -> dict[str, set[str]]:
    """The Secrets and keys deploy/README.md tells the operator to create (kubectl create secret generic ...)."""
    found: dict[str, set[str]] = {}
    text = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    for name, arguments in re.findall(r"kubectl create secret generic (\S+)([^\n]*)", text):
        found[name] = set(re.findall(r"--from-(?:literal|file)=([a-z0-9-]+)=", arguments))
    return found


def test_secrets_are_files_from_the_documented_secrets_and_each_process_gets_only_its_own(tmp_path: Path) -> None:
    """*_FILE paths lie in a mounted Secret with keys deploy/README.md creates; web: inbound only; worker: providers."""
    documented = _secret_keys_in_readme()
    assert set(documented) == {"chainer-inbound", "chainer-providers"}
    used: dict[str, set[str]] = {}
    for workload, container in _chainer_containers():
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        for variable in container["env"]:
            if "valueFrom" in variable:
                ref = variable["valueFrom"]["secretKeyRef"]
                assert ref["key"] in documented[ref["name"]], variable
                used.setdefault(workload["metadata"]["name"], set()).add(ref["name"])
            elif variable["name"].endswith("_FILE"):
                path = Path(variable["value"])
                secret = mounts[str(path.parent)]["secret"]
                assert path.name in documented[secret["secretName"]], variable
                used.setdefault(workload["metadata"]["name"], set()).add(secret["secretName"])
                assert empty_file_means_unset(variable["name"].removesuffix("_FILE"), tmp_path)
            else:
                assert not re.search(r"TOKEN|SECRET|PASSWORD|API_KEY", variable["name"]), variable
    assert used == {"chainer-web": {"chainer-inbound"}, "chainer-worker": {"chainer-providers"}}


def test_redis_statefulset_persists_to_its_volume_with_a_config_redis_accepts(tmp_path: Path) -> None:
    """CHAINER_REDIS_URL names the Redis Service; redis.conf, run by a real redis-server: AOF always, noeviction."""
    statefulset = resource("StatefulSet", "chainer-redis")
    service = resource("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert _selects(service["spec"]["selector"], _pod_labels(statefulset))
    for _, container in _chainer_containers():
        # deploy/README.md's patch for an external Redis replaces env/0.
        assert container["env"][0]["name"] == "CHAINER_REDIS_URL"
        url = urlsplit(container["env"][0]["value"])
        assert url.hostname == service["metadata"]["name"]
        assert url.port in {p["port"] for p in service["spec"]["ports"]}
    conf = resource("ConfigMap", "chainer-redis")["data"]["redis.conf"]
    directory = re.search(r"^dir (\S+)$", conf, re.MULTILINE)
    assert directory is not None
    (redis,) = pod_spec(statefulset)["containers"]
    data_mount = next(m for m in redis["volumeMounts"] if m["mountPath"] == directory.group(1))
    assert data_mount["name"] in {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    # Redis changes into `dir` while it reads the file: the volume's path does not exist here, the test's does.
    config_file = tmp_path / "redis.conf"
    config_file.write_text(conf.replace(directory.group(0), f"dir {tmp_path / 'data'}"))
    with redis_with([str(config_file)], tmp_path / "data") as client:
        settings = config(client, "appendonly", "appendfsync", "maxmemory-policy", "save", "maxmemory")
    assert (settings["appendonly"], settings["appendfsync"], settings["maxmemory-policy"]) == (
        "yes",
        "always",
        "noeviction",
    )
    assert settings["save"] and int(settings["maxmemory"]) > 0


def test_network_policies_let_only_the_ingress_reach_web_and_only_chainer_reach_redis() -> None:
    """Each pod has an ingress policy: web from the ingress controller, Redis from chainer pods, workers none
    but Prometheus (which also scrapes the web pods' http port), only on the ports their scrape annotations name."""
    policies = [doc for _, doc in resources() if doc["kind"] == "NetworkPolicy"]
    pods = {w["metadata"]["name"]: w for w in _workloads()}

    def policy_for(workload: str) -> dict[str, Any]:
        (selected,) = [
            p for p in policies if _selects(p["spec"]["podSelector"]["matchLabels"], _pod_labels(pods[workload]))
        ]
        assert selected["spec"]["policyTypes"] == ["Ingress"]
        return selected

    web = policy_for("chainer-web")["spec"]["ingress"]
    web_scrape = web[1]
    assert len(web) == 2 and len(web[0]["from"]) == 1
    source = web[0]["from"][0]
    assert set(source) == {"namespaceSelector", "podSelector"}, "the ingress controller's pods, in its namespace"
    assert not any(_selects(source["podSelector"]["matchLabels"], _pod_labels(w)) for w in pods.values())
    assert [p["port"] for p in web[0]["ports"]] == [pod_spec(pods["chainer-web"])["containers"][0]["ports"][0]["name"]]

    (worker_scrape,) = policy_for("chainer-worker")["spec"]["ingress"]
    for workload, rule in (("chainer-web", web_scrape), ("chainer-worker", worker_scrape)):
        (prometheus,) = rule["from"]
        assert set(prometheus) == {"namespaceSelector", "podSelector"}
        assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
        assert not any(_selects(prometheus["podSelector"]["matchLabels"], _pod_labels(w)) for w in pods.values())
        annotations = pods[workload]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        (port,) = [
            p for p in pod_spec(pods[workload])["containers"][0]["ports"] if p["name"] == rule["ports"][0]["port"]
        ]
        assert [p["port"] for p in rule["ports"]] == [port["name"]]
        assert str(port["containerPort"]) == annotations["prometheus.io/port"]

    redis = policy_for("chainer-redis")["spec"]["ingress"]
    assert len(redis) == 1 and [set(s) for s in redis[0]["from"]] == [{"podSelector"}], "same namespace, by pod"
    selector = redis[0]["from"][0]["podSelector"]["matchLabels"]
    allowed = {name for name, w in pods.items() if _selects(selector, _pod_labels(w))}
    assert allowed == {"chainer-web", "chainer-worker"}
    assert not _selects(selector, {"app.kubernetes.io/name": "something-else", "app.kubernetes.io/part-of": "chainer"})


# --- running the containers as the manifests describe them ------------------------------------------------


def _atomic_writer(directory: Path, files: dict[str, str], generation: int) -> None:
    """Lay out ``files`` as the kubelet does for ConfigMap and Secret volumes, or update them in place.

    The data lives in a timestamped directory, ``..data`` is a symlink to it and each key is a symlink
    through ``..data``; an update writes a new directory and swaps ``..data`` with one rename.
    """
    directory.mkdir(parents=True, exist_ok=True)
    payload = directory / f"..2026_12_03_00_00_0{generation}.{os.getpid()}"
    payload.mkdir()
    for key, text in files.items():
        (payload / key).write_text(text)
    swap = directory / "..data_tmp"
    swap.symlink_to(payload.name)
    os.replace(swap, directory / "..data")
    for key in files:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")


def _pod_environment(
    workload: dict[str, Any], root: Path, secrets: dict[str, dict[str, str]], redis_url: str
) -> dict[str, str]:
    """The container's environment with its volumes laid out under ``root``; Redis is the test's."""
    (container,) = pod_spec(workload)["containers"]
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume, target = volumes[mount["name"]], root / mount["mountPath"].lstrip("/")
        if "configMap" in volume:
            _atomic_writer(target, resource("ConfigMap", volume["configMap"]["name"])["data"], 0)
        elif "secret" in volume:
            _atomic_writer(target, secrets[volume["secret"]["secretName"]], 0)
        else:
            target.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = target
    env = chainer_env()
    for variable in container["env"]:
        if "valueFrom" in variable:
            ref = variable["valueFrom"]["secretKeyRef"]
            if ref["key"] in secrets[ref["name"]]:
                env[variable["name"]] = secrets[ref["name"]][ref["key"]]
            else:
                assert ref.get("optional") is True, variable
            continue
        value = variable["value"]
        inside = [path for path in mounts if value.startswith(path + "/")]
        if inside:
            mount_path = max(inside, key=len)
            value = str(mounts[mount_path] / value.removeprefix(mount_path + "/"))
        env[variable["name"]] = value
    env["CHAINER_REDIS_URL"] = redis_url
    return env


@pytest.mark.integration
def test_each_workload_reads_every_credential_its_compose_service_reads() -> None:
    """The web and worker Deployments read the same secret settings (and the GitHub App id) as compose's web and
    worker: no provider's webhook secrets or API credentials exist in one deployment and not in the other."""
    compose = yaml.safe_load(COMPOSE.read_text())["services"]

    def credentials(names: set[str]) -> set[str]:
        return {n.removesuffix("_FILE") for n in names if n.endswith("_FILE") or n == "CHAINER_GITHUB_APP_ID"}

    for service, deployment in (("web", "chainer-web"), ("worker", "chainer-worker")):
        (container,) = pod_spec(resource("Deployment", deployment))["containers"]
        in_kubernetes = credentials({variable["name"] for variable in container["env"]})
        in_compose = credentials(set(compose[service]["environment"]))
        assert in_kubernetes == in_compose, (deployment, sorted(in_kubernetes ^ in_compose))
    keys = _secret_keys_in_readme()
    assert {"github-webhook-secrets", "buildkite-webhook-token"} <= keys["chainer-inbound"]
    assert {"github-token", "github-app-id", "github-app-private-key", "buildkite-token"} <= keys["chainer-providers"]


def test_web_and_worker_run_with_their_manifests_and_the_web_reloads_a_configmap_update(
    tmp_path: Path, redis_url: str
) -> None:
    """`chainer web` and `chainer worker` start with the containers' environment, Secrets and ConfigMap as mounted.

    The probe paths answer 200; /readyz?workers=1 is 503 until the worker's heartbeat arrives, then 200.
    A ConfigMap update, applied like the kubelet does (new directory, ``..data`` symlink swapped), is
    picked up by the running web process without a restart.
    """
    keys = _secret_keys_in_readme()
    secrets = {
        "chainer-inbound": {key: f"{key}-for-the-test" for key in keys["chainer-inbound"]},
        # Only CircleCI webhooks signed; no provider credentials (empty files, no codeship-user or github-app-id key).
        "chainer-providers": {
            key: "" for key in keys["chainer-providers"] if key not in ("codeship-user", "github-app-id")
        },
    }
    web, worker = resource("Deployment", "chainer-web"), resource("Deployment", "chainer-worker")
    web_env = _pod_environment(web, tmp_path / "web", secrets, redis_url)
    web_env["CHAINER_RULES_POLL_SECONDS"] = "0.2"
    worker_env = _pod_environment(worker, tmp_path / "worker", secrets, redis_url)
    (container,) = pod_spec(web)["containers"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    readiness = container["readinessProbe"]["httpGet"]["path"]
    liveness = container["livenessProbe"]["httpGet"]["path"]
    with run_chainer(["web", "--host", "127.0.0.1", "--port", str(port)], tmp_path, web_env, base + liveness):
        assert get(base + readiness).status_code == 200
        assert get(f"{base}{readiness}?workers=1").status_code == 503
        admin = {"Authorization": "Bearer admin-token-for-the-test"}
        assert httpx.get(f"{base}/rules", headers=admin).status_code == 200

        with run_chainer(["worker"], tmp_path, worker_env):
            deadline = time.monotonic() + 30
            while get(f"{base}{readiness}?workers=1").status_code != 200:
                assert time.monotonic() < deadline, "the worker's heartbeat did not arrive within 30 s"
                time.sleep(0.2)

        before = get(base + readiness).json()["rules_version"]
        rules = resource("ConfigMap", "chainer-rules")["data"]["rules.yaml"]
        changed = rules.replace("name: api-after-lib", "name: api-after-lib-renamed")
        assert changed != rules
        _atomic_writer(tmp_path / "web" / "etc" / "chainer", {"rules.yaml": changed}, 1)
        deadline = time.monotonic() + 30
        while get(base + readiness).json()["rules_version"] == before:
            assert time.monotonic() < deadline, "the ConfigMap update was not picked up within 30 s"
            time.sleep(0.2)
        names = [rule["name"] for rule in httpx.get(f"{base}/rules", headers=admin).json()["rules"]]
        assert "api-after-lib-renamed" in names


def test_no_manifest_holds_a_secret_value() -> None:
    """The base ships no Secret resource and no literal secret value: only references."""
    for path in KUBERNETES.glob("*.yaml"):
        for doc in load_yaml_documents(path):
            assert doc.get("kind") != "Secret", path.name
