import json
import logging

import pytest

from glyphoxa_runtime.logs import JsonFormatter, register_secret

pytestmark = pytest.mark.unit


def test_log_records_are_json_with_context_fields_and_scrubbed_secrets():
    register_secret("s3cr3t-password")
    record = logging.makeLogRecord({
        "name": "glyphoxa.test", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "cannot connect to nats://bot:%s@host", "args": ("s3cr3t-password",),
        "tenant": "t1", "session": "s1"})
    out = json.loads(JsonFormatter("stt").format(record))
    assert out["service"] == "stt" and out["tenant"] == "t1" and out["session"] == "s1"
    assert out["level"] == "warning" and "s3cr3t-password" not in json.dumps(out)
    assert "***" in out["msg"]


@pytest.mark.parametrize(("url", "secrets"), [
    ("nats://tok3n@nats:4222", ["tok3n"]),  # token authentication: the user part is the secret
    ("nats://bot:pa55word@nats:4222", ["pa55word"]),
    ("nats://ab%2Fcd@nats:4222", ["ab%2Fcd", "ab/cd"]),
])
def test_credentials_in_nats_urls_are_scrubbed_and_never_shown(url, secrets):
    from glyphoxa_bus.connection import BusSettings

    settings = BusSettings(url=f"{url},nats://other:4222")
    assert settings.credentials() == secrets
    assert settings.shown() == ["nats://***@nats:4222", "nats://other:4222"]
    for value in settings.credentials():
        register_secret(value)
    for said in (url, secrets[-1]):
        record = logging.makeLogRecord({"name": "nats", "levelno": logging.WARNING,
                                        "levelname": "WARNING", "msg": f"cannot connect: {said}"})
        line = JsonFormatter("vad").format(record)
        assert all(secret not in line for secret in secrets), line


def test_the_user_a_connection_logs_in_as_names_its_principal_but_a_token_never_does():
    from glyphoxa_bus.connection import BusSettings

    assert BusSettings(url="nats://n:4222", user="vad").login_user() == "vad"
    assert BusSettings(url="nats://operator:pw@n:4222").login_user() == "operator"
    assert BusSettings(url="nats://tok3n@n:4222").login_user() == ""  # a token is no name
    assert BusSettings(url="nats://n:4222").login_user() == ""
    assert BusSettings(url="nats://n:4222", user="vad", password="pw").login()["inbox_prefix"] \
        == "_INBOX_vad"
