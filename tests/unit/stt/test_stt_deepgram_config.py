"""``STT_DEEPGRAM_*``: the key is required for the deepgram provider, never shown, and
``build_provider`` hands every setting on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from glyphoxa_runtime.settings import load_settings
from glyphoxa_stt.config import Settings
from glyphoxa_stt.providers import build_provider
from glyphoxa_stt.providers.deepgram import DeepgramStt

pytestmark = pytest.mark.unit

KEY = "3c9f1e7a5b2d8c4e6f0a1b3d5e7f9a2c4e6b8d0f"


def test_deepgram_needs_a_key() -> None:
    with pytest.raises(ValidationError, match="STT_DEEPGRAM_API_KEY is required when "
                                              "deepgram is used"):
        Settings(provider="deepgram")
    with pytest.raises(ValidationError, match="STT_DEEPGRAM_API_KEY is required"):
        Settings(provider="whisper", fallback=("deepgram",))


def test_without_a_key_of_its_own_deepgram_waits_for_tenant_keys() -> None:
    from glyphoxa_session_control.crypto import new_secret_key

    settings = Settings(provider="deepgram", fallback="whisper",  # type: ignore[arg-type]
                        nats={"secrets_key": new_secret_key()})  # type: ignore[arg-type]
    assert settings.chain() == ("deepgram", "whisper")
    provider = build_provider(settings)
    assert isinstance(provider, DeepgramStt) and not provider.config.api_key


@pytest.mark.parametrize("fallback", ["whisper,whisper", "deepgram", "fake, deepgram"])
def test_a_chain_names_each_provider_once(fallback) -> None:
    with pytest.raises(ValidationError, match="STT_FALLBACK must not repeat"):
        Settings(provider="deepgram", deepgram_api_key=KEY, fallback=fallback)  # type: ignore[arg-type]


def test_other_providers_need_no_deepgram_key() -> None:
    assert Settings(provider="fake").secrets() == [""]


def test_missing_key_at_start_names_the_variable(monkeypatch, capsys) -> None:
    monkeypatch.setenv("STT_PROVIDER", "deepgram")
    monkeypatch.delenv("STT_DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(SystemExit):
        load_settings(Settings, "stt")
    assert "STT_DEEPGRAM_API_KEY is required" in capsys.readouterr().err


def test_key_is_a_secret_and_every_setting_reaches_the_provider(monkeypatch) -> None:
    for name, value in {"PROVIDER": "deepgram", "DEEPGRAM_API_KEY": KEY,
                        "DEEPGRAM_BASE_URL": "http://127.0.0.1:9/",
                        "DEEPGRAM_WS_URL": "ws://127.0.0.1:9", "DEEPGRAM_MODEL": "nova-3-medical",
                        "DEEPGRAM_ENDPOINTING_MS": "0",
                        "DEEPGRAM_FINALIZE_TIMEOUT_S": "1.5"}.items():
        monkeypatch.setenv(f"STT_{name}", value)
    settings = Settings()
    assert settings.secrets() == [KEY]
    assert KEY not in repr(settings) and KEY not in settings.model_dump_json()
    provider = build_provider(settings)
    assert isinstance(provider, DeepgramStt)
    config = provider.config
    assert (config.api_key, config.base_url, config.ws_url, config.model) == (
        KEY, "http://127.0.0.1:9/", "ws://127.0.0.1:9", "nova-3-medical")
    assert (config.endpointing_ms, config.finalize_timeout_s) == (0, 1.5)
    assert KEY not in repr(config)


@pytest.mark.parametrize("name, value", [
    ("deepgram_ws_url", "https://api.deepgram.com"),
    ("deepgram_base_url", "wss://api.deepgram.com"),
    ("deepgram_endpointing_ms", -1),
    ("deepgram_finalize_timeout_s", 0),
    ("deepgram_model", "nova 3"),
])
def test_bad_deepgram_settings_are_refused(name, value) -> None:
    with pytest.raises(ValidationError):
        Settings(provider="deepgram", deepgram_api_key=KEY, **{name: value})  # type: ignore[arg-type]
