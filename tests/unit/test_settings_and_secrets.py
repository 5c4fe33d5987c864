"""Bad configuration names the variable and never echoes its value; secrets at rest."""

from __future__ import annotations

import pytest

from glyphoxa_runtime.settings import load_settings
from glyphoxa_session_control.config import Settings as ControlSettings
from glyphoxa_session_control.crypto import (
    SecretBox,
    SecretKeyError,
    key_digest,
    new_api_key,
    new_secret_key,
)
from glyphoxa_stt.config import Settings as SttSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("env", "names"), [
    ({"SESSION_CONTROL_OPERATOR_KEY": "hunter2-short"}, ["SESSION_CONTROL_OPERATOR_KEY: must be at least 24"]),
    ({"PG_POOL_MAX": "0"}, ["PG_POOL_MAX: Input should be greater than or equal to 1"]),
    ({"NATS_HEARTBEAT_TTL_S": "1"}, ["NATS_HEARTBEAT_TTL_S (1) must exceed NATS_HEARTBEAT_INTERVAL_S"]),
    ({"LOG_LEVEL": "loud", "SESSION_CONTROL_API_PORT": "70000"},
     ["LOG_LEVEL: String should match", "SESSION_CONTROL_API_PORT: Input should be less than"]),
])
def test_bad_configuration_names_the_variable_and_hides_the_value(monkeypatch, capsys, env, names):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_:
        load_settings(ControlSettings, "session-control")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("session-control: invalid configuration:")
    for name in names:
        assert name in err
    assert "hunter2" not in err and "Traceback" not in err


def test_a_stage_reports_every_mistake_at_once(monkeypatch, capsys):
    monkeypatch.setenv("STT_PROVIDER", "nope")
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(SystemExit):
        load_settings(SttSettings, "stt")
    err = capsys.readouterr().err
    assert "STT_PROVIDER:" in err and "LOG_LEVEL:" in err


def test_secret_box_rotates_keys_and_explains_bad_ones():
    old, new = new_secret_key(), new_secret_key()
    sealed = SecretBox(old).seal("bot-token-123")
    assert b"bot-token-123" not in sealed
    rotated = SecretBox(f"{new},{old}")  # new key first: it encrypts, the old one still decrypts
    assert rotated.open(sealed) == "bot-token-123"
    assert SecretBox(new).open(rotated.seal("x")) == "x"
    with pytest.raises(SecretKeyError, match="cannot be decrypted with the configured keys"):
        SecretBox(new).open(sealed)
    with pytest.raises(SecretKeyError, match="key 2 is not a Fernet key"):
        SecretBox(f"{new},not-a-key")
    with pytest.raises(SecretKeyError, match="is empty"):
        SecretBox(" , ")


def test_api_keys_are_random_and_only_their_digest_is_kept():
    (id1, key1), (id2, key2) = new_api_key(), new_api_key()
    assert key1.startswith(f"glx_{id1}_") and key1 != key2 and id1 != id2
    assert len(key_digest(key1)) == 32 and key_digest(key1) != key_digest(key2)


def test_the_local_stack_gives_each_service_only_its_keys():
    from glyphoxa_runtime.keyring import service_keys

    keys = {"bus_key": "B", "edge_key": "E", "operator_key": "O", "secret_key": "S"}
    assert service_keys("session-control", keys) == {
        "NATS_SECRETS_KEY": "B", "NATS_EDGE_KEY": "E", "SESSION_CONTROL_OPERATOR_KEY": "O",
        "SESSION_CONTROL_SECRET_KEYS": "S"}
    for stage in ("vad", "stt", "npc-brain", "tts"):
        assert service_keys(stage, keys) == {"NATS_SECRETS_KEY": "B"}  # no bot tokens
    assert service_keys("discord-edge", keys) == {"NATS_EDGE_KEY": "E"}  # no provider keys
