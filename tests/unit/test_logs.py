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
