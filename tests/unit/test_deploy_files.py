"""compose.yaml, the Dockerfile and .dockerignore, checked without a Docker engine: the
compose specification's schema, docker compose's own parser where it is installed, and the
rules the images and the stack keep (docs/deploy.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("session-control", "vad", "stt", "npc-brain", "tts", "discord-edge")
STAGES = ("vad", "stt", "npc-brain", "tts")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_compose_yaml_follows_the_compose_specification():
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec",
                             str(ROOT / "compose.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI: `docker compose "
                    "config` not run (the schema check above still is)")
def test_docker_compose_parses_it():
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("docker compose v2 is not installed: `docker compose config` not run")
    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config",
                             "-q"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_every_service_is_built_from_its_own_target(compose, dockerfile):
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    for name in (*SERVICES, "nats", "postgres"):
        service = compose["services"][name]
        assert service["build"]["target"] == name and name in targets
        assert service["image"].endswith(f"/{name}:${{GLYPHOXA_TAG:-dev}}")
    for name in SERVICES:  # each image runs its own module
        stage = dockerfile.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0]
        module = "glyphoxa_" + name.replace("-", "_")
        assert f'CMD ["python", "-m", "{module}"]' in stage
        assert f"--from={name}-venv /opt/venv" in stage


def test_each_image_gets_only_its_own_package(dockerfile):
    for name in SERVICES:
        syncs = re.findall(rf"FROM \S+ AS {name}-(?:venv|deps)\n(.*?)(?=\nFROM |\Z)", dockerfile, re.S)
        packages = set(re.findall(r"--package (\S+)", "".join(syncs)))
        assert packages == {f"glyphoxa-{name}"}, name
    assert dockerfile.count("--all-packages") == 0


def test_services_are_supervised_and_probed(compose):
    for name in SERVICES:
        service = compose["services"][name]
        assert service["restart"] == "on-failure", name  # a crash (exit != 0) restarts it
        assert service["healthcheck"]["test"][-1] == "readyz", name
        assert service["depends_on"]["nats"]["condition"] == "service_healthy", name
        assert service["depends_on"]["keys"]["condition"] == "service_completed_successfully"
        assert "container_name" not in service, name  # --scale needs compose's names
        if name != "session-control":
            assert "ports" not in service, name  # only the admin API is published
    assert compose["services"]["session-control"]["depends_on"]["postgres"] == {
        "condition": "service_healthy"}


def test_no_secret_is_in_compose_yaml_and_each_process_mounts_only_its_own(compose):
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", [])]
              for name, s in compose["services"].items()}
    assert mounts["session-control"] == ["control-secrets"]
    assert mounts["discord-edge"] == ["edge-secrets"]
    for stage in STAGES:
        assert mounts[stage] == [f"{stage}-secrets"]  # its own NATS login too (ADR 0006)
    assert mounts["nats"] == ["nats-data", "nats-secrets"]  # auth.conf, no login of anyone's
    assert "postgres-secrets" in mounts["postgres"] and "control-secrets" not in mounts["postgres"]
    # the operator's login is mounted by the one-shot keys service alone
    assert [n for n, m in mounts.items() if "operator-secrets" in m] == ["keys"]
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"KEY|TOKEN|PASSWORD|SECRET", key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:-\}", str(value)), (
                    f"{name}: {key} must come from .env, not compose.yaml")
    providers = {k for s in compose["services"].values() for k in (s.get("environment") or {})
                 if k.endswith("_API_KEY")}
    assert providers == {"STT_DEEPGRAM_API_KEY", "BRAIN_GEMINI_API_KEY", "BRAIN_OPENAI_API_KEY",
                         "TTS_ELEVENLABS_API_KEY"}
    for key in providers:  # each provider key goes to the one stage that uses it
        assert sum(key in (s.get("environment") or {}) for s in compose["services"].values()) == 1


def test_published_ports_stay_on_the_loopback_interface(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the network"


def test_env_example_names_only_variables_compose_yaml_reads():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "compose.yaml").read_text()))
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M))
    assert named and named <= used, f"not read by compose.yaml: {named - used}"
    assert not re.search(r"^[A-Z_]*(KEY|TOKEN)=\S", example, re.M), "a key in .env.example"


def test_the_build_context_leaves_out_what_no_image_needs():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv/", ".glyphoxa/", "out/", "tests/", ".git", ".env"):
        assert entry in ignored


def test_images_build_with_the_uv_the_project_uses(dockerfile):
    task = (ROOT / "task").read_text()
    assert re.search(r"^UV_VERSION=(\S+)$", task, re.M).group(1) == re.search(
        r"^ARG UV_VERSION=(\S+)$", dockerfile, re.M).group(1)
