"""k8s/ checked without a cluster: every overlay renders (kubectl's kustomize), core objects
are valid for the pinned Kubernetes version (kubernetes-validate, strict), custom resources
match their vendored CRDs (jsonschema, unknown fields refused), nats-server accepts the
rendered configuration, and the manifests agree with the code: stream, consumer and stage
names with glyphoxa_bus.streams, every variable with the services' settings, the scaling
numbers with their one place (k8s/base/scaling.yaml). Also the rules of docs/deploy.md,
Kubernetes: no secret outside a Secret, a network policy per service, hardened pods."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from glyphoxa_bus.auth import ACCOUNT
from glyphoxa_bus.auth import SERVICES as AUTH_SERVICES
from glyphoxa_bus.connection import BusSettings
from glyphoxa_bus.streams import WORK, claims_consumer_name
from glyphoxa_cli.processes import nats_server_binary
from glyphoxa_events.subjects import STAGES
from glyphoxa_events.tokens import validate_token
from glyphoxa_runtime.settings import SECRETS_DIR_VARIABLE, MetricsSettings
from tests.support.tls import make_ca_and_server_cert

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("local-models", "cloud")
# the oldest Kubernetes these manifests are for (docs/deploy.md, Kubernetes)
K8S_VERSION = "1.33.0"
NAMESPACE = "glyphoxa"
SERVICES = AUTH_SERVICES
# where each service's settings class lives (the configuration docs' generator knows)
_spec = importlib.util.spec_from_file_location("gen_config_docs",
                                               ROOT / "scripts" / "gen_config_docs.py")
assert _spec is not None and _spec.loader is not None
_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gen)
SETTINGS_MODULES: dict[str, str] = _gen.SERVICES
# names a non-secret setting must not have: such a value belongs in a Secret
SECRET_LIKE = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL|DSN", re.I)
# the NATS user of each service: files of its Secret nats-creds-<service> (docs/adr/0006)
NATS_LOGIN = {"NATS_USER", "NATS_PASSWORD"}
CUSTOM_GROUPS = ("keda.sh", "cert-manager.io", "postgresql.cnpg.io")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Each overlay as `kubectl kustomize` renders it, rendered once for the module."""
    kubectl = Path(sys.executable).parent / "kubectl"
    out = {}
    for overlay in OVERLAYS:
        result = subprocess.run([str(kubectl), "kustomize", str(K8S / "overlays" / overlay)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        out[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict]) -> dict[str, dict]:
    return {**of_kind(docs, "Deployment"), **of_kind(docs, "StatefulSet")}


def config_map(docs: list[dict], prefix: str) -> dict:
    """A generated ConfigMap by its name without kustomize's hash suffix."""
    [found] = [d for d in docs if d["kind"] == "ConfigMap"
               and re.fullmatch(rf"{re.escape(prefix)}-[a-z0-9]{{10}}", d["metadata"]["name"])]
    return found


@cache
def scaling(overlay: str | None = None) -> dict[str, str]:
    """k8s/base/scaling.yaml: the one place of the scaling numbers; an overlay's own
    scaling.yaml (the local models' stt and npc-brain) overrides some of them."""
    numbers = yaml.safe_load((K8S / "base" / "scaling.yaml").read_text())["data"]
    own = K8S / "overlays" / overlay / "scaling.yaml" if overlay else None
    if own is not None and own.exists():
        numbers = {**numbers, **yaml.safe_load(own.read_text())["data"]}
    return numbers


# --- rendering and schemas ----------------------------------------------------------------

def test_every_overlay_renders_the_whole_system(rendered):
    for overlay, docs in rendered.items():
        assert set(workloads(docs)) == {*SERVICES, "nats"}, overlay
        assert set(of_kind(docs, "StatefulSet")) == {"nats", "discord-edge"}
        assert set(of_kind(docs, "ScaledObject")) == set(STAGES)
        assert set(of_kind(docs, "Cluster")) == {"glyphoxa-pg"}
        assert set(of_kind(docs, "Namespace")) == {NAMESPACE}
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        # the scaling numbers' source is local to kustomize, never applied
        assert "glyphoxa-scaling" not in of_kind(docs, "ConfigMap")


def test_core_objects_are_valid_for_the_pinned_kubernetes_strictly(rendered):
    for overlay, docs in rendered.items():
        for doc in docs:
            if doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']}: {exc}")


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the vendored CRD's openAPIV3Schema, unknown fields refused as
    the API server's strict field validation does."""
    schemas = {}
    for path in sorted((K8S / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = _refuse_unknown_fields(version["schema"]["openAPIV3Schema"])
    return schemas


def _refuse_unknown_fields(schema: object) -> object:
    if isinstance(schema, list):
        return [_refuse_unknown_fields(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _refuse_unknown_fields(v) for k, v in schema.items()}
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_errors(doc: dict) -> list[str]:
    schema = crd_schemas()[(doc["apiVersion"], doc["kind"])]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]


def test_custom_resources_match_their_vendored_crds(rendered):
    for overlay, docs in rendered.items():
        custom = [d for d in docs if d["apiVersion"].split("/")[0] in CUSTOM_GROUPS]
        assert {(d["apiVersion"], d["kind"]) for d in custom} == set(crd_schemas())
        for doc in custom:
            assert crd_errors(doc) == [], f"{overlay}: {doc['kind']} {doc['metadata']['name']}"


def test_the_crd_check_refuses_what_the_api_server_would(rendered):
    scaled = copy.deepcopy(of_kind(rendered["cloud"], "ScaledObject")["stt"])
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 6  # KEDA takes strings only
    assert any("is not of type 'string'" in e for e in crd_errors(scaled))
    scaled = copy.deepcopy(of_kind(rendered["cloud"], "ScaledObject")["stt"])
    scaled["spec"]["minReplicas"] = 2
    assert any("minReplicas" in e for e in crd_errors(scaled))


def test_vendored_crds_name_their_release_and_licence():
    assert "Apache License" in (K8S / "crds" / "LICENSE").read_text()[:200]
    for path in sorted((K8S / "crds").glob("*.yaml")):
        head = path.read_text()[:1000]
        assert re.search(r"tag v\d+\.\d+\.\d+ \(commit [0-9a-f]{40}\)", head), path.name
        assert "Apache License, Version 2.0" in head and "Unmodified below" in head, path.name


# --- secrets ---------------------------------------------------------------------------

def test_no_secret_is_in_the_manifests(rendered):
    for overlay, docs in rendered.items():
        assert of_kind(docs, "Secret") == {}, f"{overlay}: Secrets are made by the operator"
        for cm in of_kind(docs, "ConfigMap").values():
            for key, value in (cm.get("data") or {}).items():
                assert not SECRET_LIKE.search(key), f"{overlay}: {cm['metadata']['name']}: {key}"
                if key != "nats.conf":  # whose keywords are file names and TLS settings
                    assert not SECRET_LIKE.search(value), f"{cm['metadata']['name']}: {key}"
        for name, workload in workloads(docs).items():
            for container in workload["spec"]["template"]["spec"]["containers"]:
                for env in container.get("env", []):
                    assert "secretKeyRef" not in env.get("valueFrom", {}), (name, env["name"])
                    assert not SECRET_LIKE.search(env["name"]), (name, env["name"])
                for source in container.get("envFrom", []):
                    assert "secretRef" not in source, name


def secret_files(pod: dict) -> dict[str, str]:
    """The files of the projected volume mounted as GLYPHOXA_SECRETS_DIR: path -> Secret."""
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/run/glyphoxa/secrets"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return {item["path"]: source["secret"]["name"] for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]}


def test_keys_reach_each_service_only_as_files_of_its_own_secrets(rendered):
    expected = {
        "session-control": {"SESSION_CONTROL_OPERATOR_KEY", "SESSION_CONTROL_SECRET_KEYS",
                            "NATS_SECRETS_KEY", "NATS_EDGE_KEY", "PG_DSN"},
        "vad": {"NATS_SECRETS_KEY"},
        "stt": {"NATS_SECRETS_KEY", "STT_DEEPGRAM_API_KEY"},
        "npc-brain": {"NATS_SECRETS_KEY", "BRAIN_GEMINI_API_KEY", "BRAIN_OPENAI_API_KEY"},
        "tts": {"NATS_SECRETS_KEY", "TTS_ELEVENLABS_API_KEY"},
        "discord-edge": {"NATS_EDGE_KEY"},
    }
    for docs in rendered.values():
        for service in SERVICES:
            files = secret_files(workloads(docs)[service]["spec"]["template"]["spec"])
            assert set(files) == expected[service] | NATS_LOGIN, service
            assert files["NATS_USER"] == files["NATS_PASSWORD"] == f"nats-creds-{service}"


# --- agreement with the code -------------------------------------------------------------

def _variables(cls: type[BaseSettings], prefix: str) -> set[str]:
    names = set()
    for name, field in cls.model_fields.items():
        part = field.annotation
        if isinstance(part, type) and issubclass(part, BaseSettings):
            names |= _variables(part, part.model_config.get("env_prefix", ""))
            continue
        alias = field.validation_alias
        names.add(str(alias.choices[0]) if alias is not None and hasattr(alias, "choices")
                  else f"{prefix}{name}".upper())
    return names


@cache
def settings_variables(service: str) -> set[str]:
    """Every variable a service reads (its settings class and the lib pieces in it)."""
    settings = importlib.import_module(SETTINGS_MODULES[service]).Settings
    names = _variables(settings, settings.model_config.get("env_prefix", ""))
    assert {"NATS_URL", "METRICS_PORT", "LOG_LEVEL"} <= names
    return names | {SECRETS_DIR_VARIABLE}


def variables_set(docs: list[dict], service: str) -> set[str]:
    """The variables the manifests give a service: its ConfigMaps, env and secret files."""
    pod = workloads(docs)[service]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    names = {env["name"] for env in container.get("env", [])} | set(secret_files(pod))
    for source in container.get("envFrom", []):
        names |= set(of_kind(docs, "ConfigMap")[source["configMapRef"]["name"]]["data"])
    return names


def test_every_variable_set_is_a_setting_of_its_service(rendered):
    for overlay, docs in rendered.items():
        for service in SERVICES:
            unknown = variables_set(docs, service) - settings_variables(service)
            assert not unknown, f"{overlay}: {service} does not read {unknown}"


def test_the_nats_credentials_are_read_by_every_service():
    for service in SERVICES:
        assert NATS_LOGIN <= settings_variables(service), service


def test_every_service_runs_its_own_image_of_the_dockerfile(rendered):
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.M))
    for docs in rendered.values():
        for name, workload in workloads(docs).items():
            [container] = workload["spec"]["template"]["spec"]["containers"]
            assert container["name"] == name
            image, _, tag = container["image"].rpartition(":")
            assert image == f"glyphoxa/{name}" and tag and name in targets


def test_scaled_objects_watch_each_stages_claims_consumer(rendered):
    numbers = scaling()
    nats_conf = config_map(rendered["cloud"], "nats-config")["data"]["nats.conf"]
    monitor_port = re.search(r"^http: 0\.0\.0\.0:(\d+)$", nats_conf, re.M).group(1)
    for overlay, docs in rendered.items():
        deployments = of_kind(docs, "Deployment")
        numbers = scaling(overlay)
        for stage in STAGES:
            scaled = of_kind(docs, "ScaledObject")[stage]["spec"]
            assert scaled["scaleTargetRef"] == {"name": stage} and stage in deployments
            [trigger] = scaled["triggers"]
            meta = trigger["metadata"]
            assert trigger["type"] == "nats-jetstream"
            assert all(isinstance(v, str) for v in meta.values()), meta  # KEDA's rule
            assert meta["stream"] == WORK and meta["consumer"] == claims_consumer_name(stage)
            assert meta["account"] == ACCOUNT == numbers["nats-account"]
            assert meta["natsServerMonitoringEndpoint"] == (
                f"nats-headless.{NAMESPACE}.svc.cluster.local:{monitor_port}")
            # the measured numbers, from their one place (and the overlay's own)
            assert meta["lagThreshold"] == numbers[f"{stage}-lag-threshold"], overlay
            [container] = deployments[stage]["spec"]["template"]["spec"]["containers"]
            capacity = {e["name"]: e.get("value") for e in container["env"]}[
                f"{'BRAIN' if stage == 'npc-brain' else stage.upper()}_CAPACITY"]
            assert capacity == numbers[f"{stage}-capacity"]
            # aiming below what a replica takes leaves room while another one starts
            assert 1 <= int(meta["lagThreshold"]) < int(capacity)
            # two at least: a dead replica's sessions move within session-control's grace
            assert 2 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
            assert "replicas" not in deployments[stage]["spec"]  # the HPA's to set


def test_the_monitoring_endpoint_reaches_the_nats_servers(rendered):
    docs = rendered["local-models"]
    headless = of_kind(docs, "Service")["nats-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in headless["ports"]} == {
        "client": 4222, "cluster": 6222, "monitor": 8222}
    nats = of_kind(docs, "StatefulSet")["nats"]["spec"]
    assert nats["serviceName"] == "nats-headless" and nats["replicas"] == 3
    # KEDA asks <server name>.<endpoint>: a server's name is its pod's
    env = {e["name"]: e for e in nats["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SERVER_NAME"]["value"] == "$(POD_NAME)"


def test_streams_keep_a_copy_on_every_nats_server(rendered):
    for docs in rendered.values():
        config = config_map(docs, "glyphoxa-config")["data"]
        servers = of_kind(docs, "StatefulSet")["nats"]["spec"]["replicas"]
        settings = BusSettings(url=config["NATS_URL"],
                               stream_replicas=int(config["NATS_STREAM_REPLICAS"]))
        assert settings.stream_settings().replicas == servers == 3
        assert config["NATS_URL"] == "tls://nats:4222"


def test_services_trust_the_ca_of_the_nats_certificate(rendered):
    for docs in rendered.values():
        ca = config_map(docs, "glyphoxa-config")["data"]["NATS_TLS_CA"]
        for service in SERVICES:
            pod = workloads(docs)[service]["spec"]["template"]["spec"]
            [container] = pod["containers"]
            [mount] = [m for m in container["volumeMounts"]
                       if ca.startswith(m["mountPath"] + "/")]
            [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert volume["secret"]["secretName"] == "nats-tls"
            assert volume["secret"]["items"] == [{"key": "ca.crt",
                                                  "path": ca.removeprefix(mount["mountPath"] + "/")}]


def test_discord_edge_is_named_after_its_pod(rendered):
    for docs in rendered.values():
        edge = of_kind(docs, "StatefulSet")["discord-edge"]["spec"]
        [container] = edge["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["DISCORD_EDGE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        for ordinal in range(edge["replicas"] + 3):  # the names a tenant can be assigned to
            validate_token(f"discord-edge-{ordinal}", "discord_edge")


# --- nats-server's configuration ------------------------------------------------------------

def test_nats_server_accepts_the_configuration_and_includes_the_authorization(rendered,
                                                                              tmp_path):
    docs = rendered["local-models"]
    conf = config_map(docs, "nats-config")["data"]["nats.conf"]
    nats = of_kind(docs, "StatefulSet")["nats"]["spec"]["template"]["spec"]
    [container] = nats["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert container["args"] == ["--config", f"{mounts['config']}/nats.conf"]
    assert re.search(r"^include auth\.conf$", conf, re.M)
    [config] = [v for v in nats["volumes"] if v["name"] == "config"]
    auth = [s["secret"] for s in config["projected"]["sources"] if "secret" in s]
    assert auth == [{"name": "nats-auth", "items": [{"key": "auth.conf", "path": "auth.conf"}]}]
    for route in range(3):
        assert f"nats://nats-{route}.nats-headless.{NAMESPACE}.svc.cluster.local:6222" in conf
    # the mounted paths made local, and a placeholder authorization beside the config
    local = conf
    for volume, path in mounts.items():
        (tmp_path / volume).mkdir()
        local = local.replace(f"{path}/", f"{tmp_path / volume}/").replace(
            f"store_dir: {path}\n", f"store_dir: {tmp_path / volume}\n")
    make_ca_and_server_cert(tmp_path / "tls")
    (tmp_path / "config" / "nats.conf").write_text(local)
    (tmp_path / "config" / "auth.conf").write_text(
        "authorization { users: [ {user: placeholder, password: placeholder} ] }\n")
    env = {"SERVER_NAME": "nats-0",
           "CLIENT_ADVERTISE": f"nats-0.nats-headless.{NAMESPACE}.svc.cluster.local:4222"}
    result = subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / "config" /
                                                                    "nats.conf")],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr


def test_the_nats_certificate_names_every_address_clients_use(rendered):
    docs = rendered["local-models"]
    names = of_kind(docs, "Certificate")["nats-tls"]["spec"]["dnsNames"]
    url_host = config_map(docs, "glyphoxa-config")["data"]["NATS_URL"].split("//")[1].split(":")[0]
    advertised = f"nats-1.nats-headless.{NAMESPACE}.svc.cluster.local"
    assert url_host in names
    assert f"*.{advertised.split('.', 1)[1]}" in names
    assert of_kind(docs, "Certificate")["nats-tls"]["spec"]["secretName"] == "nats-tls"
    assert {"server auth", "client auth"} <= set(
        of_kind(docs, "Certificate")["nats-tls"]["spec"]["usages"])


# --- network policies ------------------------------------------------------------------------

def _peer(peer: dict) -> str:
    if "ipBlock" in peer:
        return "internet" if peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0") else "ip"
    namespace = (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get(
        "kubernetes.io/metadata.name")
    pods = (peer.get("podSelector") or {}).get("matchLabels", {})
    if namespace == "kube-system" and pods.get("k8s-app") == "kube-dns":
        return "dns"
    if namespace:
        return f"namespace:{namespace}"
    if "cnpg.io/cluster" in pods:
        return "postgres"
    return pods.get("app.kubernetes.io/name", "?")


def egress(docs: list[dict], service: str) -> set[tuple[str, int]]:
    """(peer, port) pairs the network policies selecting ``service`` let it reach."""
    reach = set()
    for policy in of_kind(docs, "NetworkPolicy").values():
        if policy["spec"]["podSelector"].get("matchLabels") != {"app.kubernetes.io/name": service}:
            continue
        for rule in policy["spec"].get("egress", []):
            ports = [p["port"] for p in rule.get("ports", [])] or [0]  # 0: every port
            reach |= {(_peer(peer), port) for peer in rule["to"] for port in ports}
    return reach


def ingress(docs: list[dict], selector: dict) -> set[tuple[str, int]]:
    """(peer, port) pairs the network policies selecting ``selector`` let in."""
    reach = set()
    for policy in of_kind(docs, "NetworkPolicy").values():
        if policy["spec"]["podSelector"].get("matchLabels") != selector:
            continue
        for rule in policy["spec"].get("ingress", []):
            for source in rule["from"]:
                expressions = source.get("podSelector", {}).get("matchExpressions")
                peer = ("services:" + ",".join(sorted(expressions[0]["values"]))
                        if expressions else _peer(source))
                reach |= {(peer, p["port"]) for p in rule["ports"]}
    return reach


def test_each_service_reaches_only_nats_and_what_it_must(rendered):
    common = {("nats", 4222), ("dns", 53)}
    for overlay, docs in rendered.items():
        for service in SERVICES:
            policies = [p for p in of_kind(docs, "NetworkPolicy").values()
                        if p["spec"]["podSelector"].get("matchLabels")
                        == {"app.kubernetes.io/name": service}]
            assert policies, f"{overlay}: no network policy for {service}"
            assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in policies)
            expected = set(common)
            if service == "session-control":
                expected.add(("postgres", 5432))
            if service == "discord-edge":
                expected.add(("internet", 0))  # Discord's voice servers pick their UDP ports
            if overlay == "cloud" and service in ("stt", "npc-brain", "tts"):
                expected.add(("internet", 443))
            assert egress(docs, service) == expected, f"{overlay}: {service}"


def test_nats_monitoring_only_from_keda_and_the_admin_api_only_through_the_ingress(rendered):
    for docs in rendered.values():
        nats = ingress(docs, {"app.kubernetes.io/name": "nats"})
        assert nats == {("services:" + ",".join(sorted(SERVICES)), 4222), ("nats", 6222),
                        ("namespace:keda", 8222)}
        control = ingress(docs, {"app.kubernetes.io/name": "session-control"})
        assert {peer for peer, port in control if port == 8700} == {"namespace:ingress-nginx"}
        [route] = of_kind(docs, "Ingress")["session-control"]["spec"]["rules"]
        [path] = route["http"]["paths"]
        backend = path["backend"]["service"]
        service = of_kind(docs, "Service")[backend["name"]]["spec"]["ports"]
        assert backend["name"] == "session-control"
        assert [p["port"] for p in service if p["name"] == backend["port"]["name"]] == [8700]
        settings = importlib.import_module(SETTINGS_MODULES["session-control"]).Settings
        assert settings.model_fields["api_port"].default == 8700
        pg = ingress(docs, {"cnpg.io/cluster": "glyphoxa-pg"})
        assert ("session-control", 5432) in pg and not {p for p in pg if p[0] in SERVICES
                                                        and p[0] != "session-control"}


# --- pods ----------------------------------------------------------------------------------

def test_pods_run_unprivileged_with_a_read_only_root(rendered):
    for overlay, docs in rendered.items():
        for name, workload in workloads(docs).items():
            pod = workload["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False and not pod["enableServiceLinks"]
            security = pod["securityContext"]
            assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
            assert security["fsGroup"] == 10001
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}
            for container in pod["containers"]:
                assert container["securityContext"] == {
                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]}}, f"{overlay}: {name}"
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), name
                assert {"cpu", "memory"} <= set(resources["limits"]), name
            writable = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]
                        if not m.get("readOnly")}
            assert writable == ({"/data", "/var/run/nats"} if name == "nats" else {"/tmp"}), name


def test_services_are_probed_on_their_metrics_port(rendered):
    dockerfile = (ROOT / "Dockerfile").read_text()
    metrics_port = int(re.search(r"METRICS_PORT=(\d+)", dockerfile).group(1))
    assert MetricsSettings.model_fields["port"].default == 0  # the image's ENV sets it
    for docs in rendered.values():
        for service in SERVICES:
            [container] = workloads(docs)[service]["spec"]["template"]["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == metrics_port
            for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                                ("readinessProbe", "/readyz")):
                assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, service


def test_a_stopped_replica_has_time_to_hand_its_sessions_over(rendered):
    drain = BusSettings.model_fields["drain_timeout_s"].default
    for docs in rendered.values():
        for service in SERVICES:
            pod = workloads(docs)[service]["spec"]["template"]["spec"]
            [container] = pod["containers"]
            pre_stop = container.get("lifecycle", {}).get("preStop", {})
            sleep = pre_stop.get("sleep", {}).get("seconds", 0)
            # shutdown, publisher flush and NATS drain are each bounded by the drain timeout
            assert pod["terminationGracePeriodSeconds"] >= sleep + 3 * drain + 5, service
            # only session-control is behind a Service whose endpoints must drain first
            assert bool(pre_stop) == (service == "session-control"), service
        for stage in STAGES:
            strategy = of_kind(docs, "Deployment")[stage]["spec"]["strategy"]
            assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_every_workload_has_a_disruption_budget_and_spreads_over_nodes(rendered):
    for docs in rendered.values():
        budgets = {tuple(sorted(b["spec"]["selector"]["matchLabels"].items()))
                   for b in of_kind(docs, "PodDisruptionBudget").values()}
        for name, workload in workloads(docs).items():
            selector = workload["spec"]["selector"]["matchLabels"]
            assert tuple(sorted(selector.items())) in budgets, name
            spread = workload["spec"]["template"]["spec"]["topologySpreadConstraints"]
            assert any(c["topologyKey"] == "kubernetes.io/hostname"
                       and c["labelSelector"]["matchLabels"] == selector for c in spread), name
