"""The deployment's keys: made once, each kind of process given only its own, never printed;
settings read from a secrets directory; the health probe the images run."""

from __future__ import annotations

import asyncio
import base64
import stat

import pytest

from glyphoxa_bus.auth import tenant_edge_key
from glyphoxa_runtime import keyring, probe
from glyphoxa_runtime.http import HealthServer
from glyphoxa_runtime.settings import SecretsDirError, load_settings, read_secrets_dir
from glyphoxa_stt.config import Settings as SttSettings

pytestmark = pytest.mark.unit

DSN = "postgresql://glyphoxa@postgres:5432/glyphoxa"


def files(root) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {str(p.relative_to(root)): p.read_text().strip()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_init_makes_one_directory_per_kind_of_process_with_only_its_keys(tmp_path, capsys):
    assert keyring.main(["init", str(tmp_path), "--pg-dsn", DSN]) == 0
    out = files(tmp_path)
    login = {"NATS_USER", "NATS_PASSWORD"}
    control = {k.split("/")[1]: v for k, v in out.items() if k.startswith("session-control/")}
    assert set(control) == {"SESSION_CONTROL_OPERATOR_KEY", "SESSION_CONTROL_SECRET_KEYS",
                            "NATS_SECRETS_KEY", "NATS_EDGE_KEY", "PG_DSN", *login}
    for stage in ("vad", "stt", "npc-brain", "tts"):
        assert out[f"{stage}/NATS_SECRETS_KEY"] == control["NATS_SECRETS_KEY"]
        assert {k.split("/")[1] for k in out if k.startswith(f"{stage}/")} == {
            "NATS_SECRETS_KEY", *login}
        assert out[f"{stage}/NATS_USER"] == stage
    assert {k.split("/")[1] for k in out if k.startswith("discord-edge/")} == {
        "NATS_EDGE_KEY", *login}
    assert out["discord-edge/NATS_EDGE_KEY"] == control["NATS_EDGE_KEY"]
    assert {k for k in out if k.startswith("operator/")} == {"operator/NATS_USER",
                                                            "operator/NATS_PASSWORD"}
    passwords = [v for k, v in out.items() if k.endswith("/NATS_PASSWORD")]
    assert len(passwords) == len(set(passwords)) == 7  # six services and the operator
    # nats-server's users: every login there, hashed, none in the clear
    conf = out["nats/auth.conf"]
    assert all(f'"user": "{user}"' in conf for user in (*keyring.DIRS, "operator"))
    assert "$2a$" in conf and not [p for p in passwords if p in conf]
    password = out["postgres/POSTGRES_PASSWORD"]
    assert control["PG_DSN"] == f"postgresql://glyphoxa:{password}@postgres:5432/glyphoxa"
    assert control["SESSION_CONTROL_OPERATOR_KEY"].startswith("op_")
    for name in ("SESSION_CONTROL_SECRET_KEYS", "NATS_SECRETS_KEY", "NATS_EDGE_KEY"):
        assert len(base64.urlsafe_b64decode(control[name])) == 32  # Fernet keys
    assert len(set(control.values())) == len(control)  # no key serves twice
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    secrets = [v for k, v in out.items() if not k.endswith("/NATS_USER")]  # users are names
    assert "made " in printed and all(v not in printed for v in secrets)


def test_init_again_keeps_every_key_and_completes_what_is_missing(tmp_path):
    keyring.init(tmp_path, DSN)
    first = files(tmp_path)
    rotated = "NEWKEY=,OLDKEY="  # an operator put a second at-rest key first, for rotation
    (tmp_path / "session-control" / "SESSION_CONTROL_SECRET_KEYS").write_text(rotated)
    (tmp_path / "session-control" / "SESSION_CONTROL_SECRET_KEYS").chmod(0o644)
    (tmp_path / "stt" / "NATS_SECRETS_KEY").unlink()  # a lost derived file
    made, kept = keyring.init(tmp_path, DSN)
    assert made == []
    assert {k for k in kept if not k.startswith("NATS_PASSWORD")} == {
        "SESSION_CONTROL_OPERATOR_KEY", "SESSION_CONTROL_SECRET_KEYS", "NATS_SECRETS_KEY",
        "NATS_EDGE_KEY", "POSTGRES_PASSWORD"}
    assert len([k for k in kept if k.startswith("NATS_PASSWORD")]) == 7
    again = files(tmp_path)
    first.pop("nats/auth.conf"), again.pop("nats/auth.conf")  # hashed anew (a new salt)
    assert again == {**first, "session-control/SESSION_CONTROL_SECRET_KEYS": rotated}
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {0o600}


def test_init_refuses_a_dsn_with_a_password_and_keeps_quiet_about_it(tmp_path, capsys):
    assert keyring.main(["init", str(tmp_path), "--pg-dsn",
                         "postgresql://u:hunter22@db/x"]) == 1
    err = capsys.readouterr().err
    assert "must not carry a password" in err and "hunter22" not in err


def test_each_service_is_handed_only_its_keys():
    keys = {"operator_key": "O", "secret_key": "S", "bus_key": "B", "edge_key": "E"}
    assert keyring.service_keys("session-control", keys) == {
        "NATS_SECRETS_KEY": "B", "NATS_EDGE_KEY": "E",
        "SESSION_CONTROL_OPERATOR_KEY": "O", "SESSION_CONTROL_SECRET_KEYS": "S"}
    for stage in ("vad", "stt", "npc-brain", "tts"):
        assert keyring.service_keys(stage, keys) == {"NATS_SECRETS_KEY": "B"}
    assert keyring.service_keys("discord-edge", keys) == {"NATS_EDGE_KEY": "E"}


def test_a_secrets_directory_sets_settings_the_environment_does_not(tmp_path):
    (tmp_path / "STT_DEEPGRAM_API_KEY").write_text("dg-from-file\n")
    (tmp_path / "NATS_URL").write_text("nats://from-file:4222")
    (tmp_path / "README.md").write_text("not a variable")
    (tmp_path / "lower_case").write_text("not a variable either")
    env = {"GLYPHOXA_SECRETS_DIR": str(tmp_path), "NATS_URL": "nats://from-env:4222"}
    assert read_secrets_dir(env) == ["STT_DEEPGRAM_API_KEY"]
    assert env["STT_DEEPGRAM_API_KEY"] == "dg-from-file"
    assert env["NATS_URL"] == "nats://from-env:4222"  # the environment wins
    assert "README.md" not in env and "lower_case" not in env
    assert read_secrets_dir({}) == []


def test_services_read_their_secrets_directory_at_start(tmp_path, monkeypatch):
    (tmp_path / "STT_DEEPGRAM_API_KEY").write_text("dg-from-file-123")
    monkeypatch.setenv("GLYPHOXA_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("STT_DEEPGRAM_API_KEY", "")  # empty: the file gives it (undone after)
    settings = load_settings(SttSettings, "stt")
    assert settings.deepgram_api_key.get_secret_value() == "dg-from-file-123"


def test_a_missing_secrets_directory_stops_the_start_with_its_name(tmp_path, monkeypatch, capsys):
    with pytest.raises(SecretsDirError, match="is not a directory"):
        read_secrets_dir({"GLYPHOXA_SECRETS_DIR": str(tmp_path / "nope")})
    monkeypatch.setenv("GLYPHOXA_SECRETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(SystemExit) as exit_:
        load_settings(SttSettings, "stt")
    assert exit_.value.code == 2
    assert "GLYPHOXA_SECRETS_DIR" in capsys.readouterr().err


async def test_the_probe_passes_on_200_and_fails_otherwise(monkeypatch, capsys):
    state = {"ready": False, "problem": "NATS is unreachable"}
    server = HealthServer("127.0.0.1", 0, lambda: dict(state))
    await server.start()
    try:
        monkeypatch.setenv("METRICS_PORT", str(server.port))
        run = lambda path: asyncio.to_thread(probe.main, [path])  # noqa: E731
        assert await run("healthz") == 0
        assert await run("readyz") == 1
        assert "NATS is unreachable" in capsys.readouterr().out
        state["ready"] = True
        assert await run("/readyz") == 0
        assert await run("metrics") == 2
        monkeypatch.setenv("METRICS_PORT", "0")
        assert await run("healthz") == 2
        monkeypatch.setenv("METRICS_PORT", str(server.port))
    finally:
        await server.stop()
    assert await run("healthz") == 1
    assert "nothing answers" in capsys.readouterr().out


def test_a_tenants_own_edge_gets_a_login_limited_to_its_tenant(tmp_path):
    keyring.init(tmp_path, tenant_edges=("acme",))
    assert (tmp_path / "edge-acme" / "NATS_USER").read_text().strip() == "edge-acme"
    password = (tmp_path / "edge-acme" / "NATS_PASSWORD").read_text().strip()
    conf = (tmp_path / "nats" / "auth.conf").read_text()
    assert '"user": "edge-acme"' in conf and "glx.acme.*.audio.in.*" in conf
    assert password not in conf
    # its bot key is derived for it: the shared edge key (every tenant's bot token) stays home
    shared = (tmp_path / "discord-edge" / "NATS_EDGE_KEY").read_text().strip()
    own = (tmp_path / "edge-acme" / "NATS_EDGE_KEY").read_text().strip()
    assert own == tenant_edge_key(shared, "edge-acme") and own != shared
    keyring.init(tmp_path)  # later runs keep it without being asked again
    assert (tmp_path / "edge-acme" / "NATS_PASSWORD").read_text().strip() == password
    assert '"user": "edge-acme"' in (tmp_path / "nats" / "auth.conf").read_text()
    with pytest.raises(ValueError):
        keyring.init(tmp_path, tenant_edges=("not a tenant",))
