"""deploy/kubernetes renders, validates offline, and runs exactly SPEC §2's processes.

Both overlays are rendered with ``kubectl kustomize`` (tests/support/kubernetes.py). Every
rendered object is validated against the Kubernetes JSON schemas of ``kubernetes-validate``
(strict: unknown fields fail), KEDA's objects against deploy/kubernetes/schemas/. The other
tests hold the manifests to the SPEC and to what gateway_project/settings.py and
gunicorn.conf.py actually read.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from gateway_project import settings as project_settings
from queues import topology
from tests.support.kubernetes import KUBE, ROOT, SECRETS_DIR, render

OVERLAYS = ("dev", "production")
# The oldest Kubernetes these manifests claim to run on, and the newest schema shipped.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
KEDA_SCHEMA = json.loads((KUBE / "schemas" / "keda.sh-v1alpha1.json").read_text())

GATEWAY_CMD = "gunicorn -c gateway_project/gunicorn.conf.py gateway_project.wsgi:application"
ADMIN_CMD = "gunicorn -c gateway_project/gunicorn.conf.py -b 0.0.0.0:4201 admin_panel.wsgi:application"
WORKER_CMD = "celery -A gateway_project worker -Q {queue}"
# Secret variables with a fixed name; GATEWAY_SERVICE_KEY_<NAME> is per service (README).
FIXED_SECRETS = tuple(name for name in project_settings.SECRET_VARIABLES if "<" not in name)
APP_LABELS = {"app.kubernetes.io/name": "api-gateway", "app.kubernetes.io/part-of": "api-gateway"}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


@pytest.fixture(scope="module")
def dev() -> list[dict[str, Any]]:
    return render("dev")


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render("production")


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = objects(docs, kind)
    assert name in found, f"no {kind} {name}; have {sorted(found)}"
    return found[name]


def is_app(doc: Mapping[str, Any]) -> bool:
    labels = doc["metadata"].get("labels", {})
    return all(labels.get(key) == value for key, value in APP_LABELS.items())


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (name, pod spec) of the gateway's own Deployments and Jobs."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job") and is_app(doc):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def all_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def command_line(container: Mapping[str, Any]) -> str:
    return shlex.join([*container.get("command", []), *container.get("args", [])])


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [
        doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("gateway-config")
    ]
    return config["data"]


def probe_path(container: Mapping[str, Any], probe: str) -> tuple[str, str | int]:
    get = container[probe]["httpGet"]
    return get["path"], get["port"]


def probe_host(container: Mapping[str, Any], probe: str) -> str | None:
    headers = {header["name"].lower(): header["value"] for header in container[probe]["httpGet"].get("httpHeaders", [])}
    return headers.get("host")


def validate(doc: dict[str, Any], version: str) -> None:
    """Validate one rendered object; raise jsonschema.ValidationError when it is invalid."""
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


# --- Rendering and schemas -----------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates_against_its_schema(rendered: list[dict[str, Any]], version: str) -> None:
    kinds = {doc["kind"] for doc in rendered}
    assert {"Deployment", "Job", "Service", "Ingress", "ConfigMap", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "ScaledObject", "TriggerAuthentication"} <= kinds
    for doc in rendered:
        try:
            validate(doc, version)
        except (kubernetes_validate.SchemaNotFoundError, jsonschema.ValidationError) as exc:
            where = "/".join(str(part) for part in getattr(exc, "absolute_path", ()))
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {getattr(exc, 'message', exc)}")


def test_the_schema_checks_refuse_a_misspelt_field(dev: list[dict[str, Any]]) -> None:
    gateway = json.loads(json.dumps(one(dev, "Deployment", "gateway")))
    gateway["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate(gateway, KUBERNETES_VERSIONS[0])
    scaled = json.loads(json.dumps(one(dev, "ScaledObject", "worker-email")))
    scaled["spec"]["triggers"][0]["metadata"]["queue_name"] = "email"
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, KUBERNETES_VERSIONS[0])
    del scaled["spec"]["triggers"][0]["metadata"]["queue_name"]
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, KUBERNETES_VERSIONS[0])


# --- SPEC §2: processes and ports ------------------------------------------------------------


def test_the_processes_are_the_spec_start_commands_with_one_worker_per_queue(rendered: list[dict[str, Any]]) -> None:
    deployments = {name: doc for name, doc in objects(rendered, "Deployment").items() if is_app(doc)}
    assert set(deployments) == {"gateway", "admin"} | {f"worker-{queue}" for queue in topology.QUEUE_NAMES}
    assert command_line(deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]) == GATEWAY_CMD
    assert command_line(deployments["admin"]["spec"]["template"]["spec"]["containers"][0]) == ADMIN_CMD
    for queue in topology.QUEUE_NAMES:
        worker = deployments[f"worker-{queue}"]["spec"]["template"]["spec"]["containers"][0]
        assert command_line(worker).startswith(WORKER_CMD.format(queue=queue) + " "), command_line(worker)
    migrate = one(rendered, "Job", "gateway-migrate")["spec"]["template"]["spec"]
    assert command_line(migrate["containers"][0]) == "python manage.py migrate --noinput"
    assert migrate["restartPolicy"] == "Never"


def test_gateway_listens_on_4200_and_admin_on_4201_each_behind_its_own_ingress(rendered: list[dict[str, Any]]) -> None:
    for name, port in (("gateway", 4200), ("admin", 4201)):
        container = one(rendered, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        service = one(rendered, "Service", name)
        assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]
        pods = one(rendered, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pods.items()
        (rule,) = one(rendered, "Ingress", name)["spec"]["rules"]
        backends = {path["backend"]["service"]["name"] for path in rule["http"]["paths"]}
        assert backends == {name}
    gateway_host = one(rendered, "Ingress", "gateway")["spec"]["rules"][0]["host"]
    admin_host = one(rendered, "Ingress", "admin")["spec"]["rules"][0]["host"]
    assert gateway_host != admin_host
    # Django refuses a Host not in ALLOWED_HOSTS (SPEC §4.2: 400 bad_host).
    allowed = config_data(rendered)["ALLOWED_HOSTS"].split(",")
    assert gateway_host in allowed and admin_host in allowed


def test_the_public_ingress_exposes_only_the_api(rendered: list[dict[str, Any]]) -> None:
    (rule,) = one(rendered, "Ingress", "gateway")["spec"]["rules"]
    assert [(path["path"], path["pathType"]) for path in rule["http"]["paths"]] == [("/api/v1", "Prefix")]
    assert config_data(rendered)["GATEWAY_ADMIN_API_ON_PUBLIC_PORT"] == "false"


def test_readiness_is_readyz_and_liveness_is_healthz(rendered: list[dict[str, Any]]) -> None:
    for name in ("gateway", "admin"):
        container = one(rendered, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert probe_path(container, "readinessProbe") == ("/readyz", "http")
        assert probe_path(container, "livenessProbe") == ("/healthz", "http")
        assert probe_path(container, "startupProbe") == ("/healthz", "http")
        # /readyz cuts its checks off at 2 s (gateway_project/ops.py): the probe waits longer.
        assert container["readinessProbe"]["timeoutSeconds"] > 2
        # The kubelet's own Host (the pod address) is not an allowed host: the probes name one that is.
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe_host(container, probe) in config_data(rendered)["ALLOWED_HOSTS"].split(","), (name, probe)


# --- SPEC §9: environment and X_FILE secrets --------------------------------------------------


def variables_read_by_the_code() -> set[str]:
    """Return every environment variable settings.py and gunicorn.conf.py read (X_FILE forms included)."""
    source = (ROOT / "gateway_project" / "settings.py").read_text()
    source += (ROOT / "gateway_project" / "gunicorn.conf.py").read_text()
    names = set(re.findall(r"""(?:env\.\w+|env|os\.environ\.get)\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))
    secrets = set(re.findall(r"""secret\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))
    return names | secrets | {f"{name}_FILE" for name in secrets}


def test_every_configmap_key_is_a_variable_the_gateway_reads(rendered: list[dict[str, Any]]) -> None:
    known = variables_read_by_the_code()
    assert "GATEWAY_GRACEFUL_TIMEOUT_S" in known and "WEB_CONCURRENCY" in known  # the parser works
    unknown = set(config_data(rendered)) - known
    assert not unknown, f"not read by settings.py or gunicorn.conf.py: {sorted(unknown)}"


def test_every_secret_variable_is_a_file_of_the_mounted_secret(rendered: list[dict[str, Any]]) -> None:
    config = config_data(rendered)
    for name in FIXED_SECRETS:
        assert config.get(f"{name}_FILE") == f"{SECRETS_DIR}/{name}", name
        assert name not in config, f"{name} is a secret: it belongs in the Secret, not the ConfigMap"
    for where, pod in pod_specs(rendered):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        secret_volumes = [name for name, volume in volumes.items() if "secret" in volume]
        assert len(secret_volumes) == 1, where
        assert volumes[secret_volumes[0]]["secret"]["secretName"].startswith("gateway-secrets"), where
        for container in all_containers(pod):
            mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
            assert mounts[SECRETS_DIR] == {"name": secret_volumes[0], "mountPath": SECRETS_DIR, "readOnly": True}
            assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == [config_name(rendered)]
            # No secret value inline in a manifest.
            assert not {env["name"] for env in container.get("env", [])} & set(FIXED_SECRETS), where


def config_name(docs: list[dict[str, Any]]) -> str:
    (name,) = [doc["metadata"]["name"] for doc in docs if doc["kind"] == "ConfigMap"]
    return name


def test_dev_generates_every_secret_file_and_production_keeps_secrets_out_of_git(
    dev: list[dict[str, Any]], production: list[dict[str, Any]]
) -> None:
    (secret,) = [doc for name, doc in objects(dev, "Secret").items() if name.startswith("gateway-secrets")]
    assert set(secret["data"]) == set(FIXED_SECRETS)
    assert not objects(production, "Secret"), "production secrets are created out of band, never rendered from git"
    for docs in (dev, production):
        (auth,) = objects(docs, "TriggerAuthentication").values()
        (ref,) = auth["spec"]["secretTargetRef"]
        secret_name = one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["volumes"][0]["secret"]
        assert (ref["parameter"], ref["name"], ref["key"]) == ("host", secret_name["secretName"], "CELERY_BROKER_URL")


def test_the_settings_load_from_the_rendered_configmap_and_secret_files(
    dev: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Start the real settings with the dev overlay's environment and its secret files on disk."""
    (secret,) = [doc for name, doc in objects(dev, "Secret").items() if name.startswith("gateway-secrets")]
    for key, value in secret["data"].items():
        (tmp_path / key).write_bytes(base64.b64decode(value))
    env = {key: value.replace(SECRETS_DIR, str(tmp_path)) for key, value in config_data(dev).items()}
    env.update(PATH=os.environ.get("PATH", ""), DJANGO_SETTINGS_MODULE="gateway_project.settings")
    probe = (
        "import json; from django.conf import settings as s; db = s.DATABASES['default']; "
        "print(json.dumps([s.SECRET_KEY, db['HOST'], db['NAME'], s.CACHES['default']['LOCATION'], "
        "s.CELERY_BROKER_URL, s.CELERY_RESULT_BACKEND, s.GATEWAY['CALLBACK_SECRET'], s.DEBUG, s.ALLOWED_HOSTS]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    key, db_host, db_name, redis, broker, results, callback, debug, hosts = json.loads(done.stdout)
    plain = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert key == plain["SECRET_KEY"]
    assert (db_host, db_name) == ("postgres", "gateway")
    assert redis == plain["REDIS_URL"] and broker == plain["CELERY_BROKER_URL"]
    assert results == "" and callback == plain["GATEWAY_CALLBACK_SECRET"]
    assert debug is False and "api.gateway.localhost" in hosts


# --- Pods: non-root, read-only, graceful -------------------------------------------------------


def test_every_pod_runs_as_the_image_user_with_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    pods = dict(pod_specs(rendered))
    assert len(pods) == 2 + len(topology.QUEUE_NAMES) + 1
    for where, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == uid, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in all_containers(pod):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, (where, container["name"])
            assert security["allowPrivilegeEscalation"] is False, (where, container["name"])
            assert security["capabilities"] == {"drop": ["ALL"]}, (where, container["name"])
            tmp = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp")  # noqa: S108 - a mount path, not a file
            assert "emptyDir" in volumes[tmp["name"]], where
            assert container["resources"]["limits"]["memory"], where


def test_a_rolling_update_waits_for_in_flight_requests(rendered: list[dict[str, Any]]) -> None:
    graceful_s = int(config_data(rendered)["GATEWAY_GRACEFUL_TIMEOUT_S"])
    assert 'os.environ.get("GATEWAY_GRACEFUL_TIMEOUT_S"' in (ROOT / "gateway_project" / "gunicorn.conf.py").read_text()
    for name in ("gateway", "admin"):
        deployment = one(rendered, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        sleep = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep" and int(sleep[1]) >= 5, name
        assert pod["terminationGracePeriodSeconds"] > int(sleep[1]) + graceful_s, name
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
    assert int(config_data(rendered)["WEB_CONCURRENCY"]) >= 1


# --- Scaling and disruption -------------------------------------------------------------------


def selects(selector: Mapping[str, str], deployment: Mapping[str, Any]) -> bool:
    return selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_gateways_scale_on_cpu_and_workers_on_their_queue_depth(rendered: list[dict[str, Any]]) -> None:
    (hpa,) = objects(rendered, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    gateway = one(rendered, "Deployment", "gateway")
    assert "replicas" not in gateway["spec"], "the autoscaler owns the gateway's replica count"
    assert gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    auths = objects(rendered, "TriggerAuthentication")
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in objects(rendered, "ScaledObject").values()}
    assert set(scaled) == {f"worker-{queue}" for queue in topology.QUEUE_NAMES}
    for queue in topology.QUEUE_NAMES:
        assert "replicas" not in one(rendered, "Deployment", f"worker-{queue}")["spec"]
        (trigger,) = scaled[f"worker-{queue}"]["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["queueName"] == queue
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] in auths
        assert scaled[f"worker-{queue}"]["spec"]["minReplicaCount"] >= 1


def test_every_deployment_has_a_disruption_budget_selecting_only_its_pods(rendered: list[dict[str, Any]]) -> None:
    deployments = {name: doc for name, doc in objects(rendered, "Deployment").items() if is_app(doc)}
    budgets = objects(rendered, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        matching = [
            budget for budget in budgets.values() if selects(budget["spec"]["selector"]["matchLabels"], deployment)
        ]
        assert len(matching) == 1, name
        selected = [
            other for other in deployments.values() if selects(matching[0]["spec"]["selector"]["matchLabels"], other)
        ]
        assert selected == [deployment], f"the budget of {name} also selects other pods"


def test_production_runs_three_gateways_with_tls_under_the_restricted_pod_standard(
    production: list[dict[str, Any]],
) -> None:
    (namespace,) = objects(production, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert one(production, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] >= 3
    assert one(production, "PodDisruptionBudget", "gateway")["spec"]["minAvailable"] >= 2
    for name in ("gateway", "admin"):
        ingress = one(production, "Ingress", name)
        assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    assert config_data(production)["GATEWAY_TRUSTED_PROXIES"]
    assert "whitelist-source-range" in " ".join(one(production, "Ingress", "admin")["metadata"]["annotations"])
