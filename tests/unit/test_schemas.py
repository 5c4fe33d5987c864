"""schemas/ is the contract: it must match the models and describe every subject."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from glyphoxa_events.models import SCHEMA_MODELS
from glyphoxa_events.tokens import TOKEN_PATTERN

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
REGENERATE = "run `.venv/bin/python scripts/gen_schemas.py` and commit schemas/"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "scripts" / "gen_schemas.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_schemas", module)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))


def _refs(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, $ref) of every reference in a YAML/JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path or "/", value
            else:
                yield from _refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, f"{path}/{i}")


def _pointer(doc: Any, pointer: str) -> Any:
    node = doc
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(pointer)
    return node


# --- drift -----------------------------------------------------------------------------------


def test_schemas_on_disk_match_the_models() -> None:
    problems = gen.differences(SCHEMAS)
    assert not problems, f"schemas/ drifted from the models; {REGENERATE}\n" + "".join(problems)[:6000]


def test_generation_is_deterministic() -> None:
    assert gen.generate() == gen.generate()


def test_check_mode_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / "json" / "Transcript.json"
    target.write_text(target.read_text().replace('"text"', '"txt"'))
    (tmp_path / "json" / "Gone.json").write_text("{}\n")
    capsys.readouterr()
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Transcript.json" in out and '+    "text"' in out
    assert "Gone.json" in out and "stale" in out


def test_json_files_are_stably_formatted() -> None:
    for path in sorted((SCHEMAS / "json").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", path.name


# --- every model has a schema ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted({*SCHEMA_MODELS, *gen.API_MODELS}))
def test_every_model_has_a_schema(name: str) -> None:
    path = SCHEMAS / "json" / f"{name}.json"
    assert path.is_file(), f"schemas/json/{name}.json is missing; {REGENERATE}"
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["title"] == name
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False, "events forbid unknown fields"
    for where, ref in _refs(schema):
        assert ref.startswith("#/"), (name, where, ref)
        _pointer(schema, ref[1:])  # raises if it does not resolve


def test_api_bodies_are_the_ones_in_the_api_module() -> None:
    from pydantic import BaseModel

    from glyphoxa_events import api

    bodies = {
        name for name, obj in vars(api).items()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == api.__name__
        and not name.startswith("_")
    }
    assert bodies == set(gen.API_MODELS), "a new API body must be added to gen_schemas.API_MODELS"


# --- the AsyncAPI document -------------------------------------------------------------------


def test_asyncapi_parses_and_is_version_3(doc: dict[str, Any]) -> None:
    assert isinstance(doc, dict)
    assert str(doc["asyncapi"]).startswith("3."), doc["asyncapi"]
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["channels"] and doc["operations"] and doc["components"]["messages"]


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    for where, ref in _refs(doc):
        if ref.startswith("#/"):
            try:
                _pointer(doc, ref[1:])
            except KeyError:
                pytest.fail(f"{where}: {ref} does not exist in asyncapi.yaml")
        else:
            target = SCHEMAS / ref
            assert target.is_file(), f"{where}: {ref} does not exist under schemas/"
            json.loads(target.read_text(encoding="utf-8"))


def test_every_referenced_message_exists(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    for cid, channel in doc["channels"].items():
        assert channel["messages"], f"channel {cid} has no messages"
        for msg in channel["messages"].values():
            name = msg["$ref"].removeprefix("#/components/messages/")
            assert name in messages, f"channel {cid}: message {name} is not defined"
    for op_id, op in doc["operations"].items():
        channel_ref = op["channel"]["$ref"]
        channel = _pointer(doc, channel_ref[1:])
        for msg in op["messages"]:
            assert msg["$ref"].startswith(channel_ref + "/messages/"), (op_id, msg)
            _pointer(doc, msg["$ref"][1:])
        if "reply" in op:
            reply_ref = op["reply"]["channel"]["$ref"]
            for msg in op["reply"]["messages"]:
                assert msg["$ref"].startswith(reply_ref + "/messages/"), (op_id, msg)
                _pointer(doc, msg["$ref"][1:])
        assert channel["messages"]


def test_every_model_is_the_payload_of_a_message(doc: dict[str, Any]) -> None:
    payloads = {
        m["payload"]["$ref"] for m in doc["components"]["messages"].values() if "$ref" in m["payload"]
    }
    for name in {*SCHEMA_MODELS, *gen.API_MODELS}:
        assert f"json/{name}.json" in payloads, f"no message carries {name}"


def test_channel_parameters_use_the_token_pattern(doc: dict[str, Any]) -> None:
    params = doc["components"]["parameters"]
    for name in ("tenant", "session", "speaker", "npc"):
        assert params[name]["x-pattern"] == f"^{TOKEN_PATTERN}$"
        assert TOKEN_PATTERN in params[name]["description"]
    for cid, channel in doc["channels"].items():
        if channel["address"] is None:
            continue
        used = set(re.findall(r"\{(\w+)\}", channel["address"]))
        declared = set(channel.get("parameters", {}))
        assert used == declared, f"channel {cid}: address uses {used}, declares {declared}"


def test_audio_is_raw_binary_with_headers(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    for cid in ("audioIn", "audioOut", "vad"):
        channel = doc["channels"][cid]
        for msg_ref in channel["messages"].values():
            msg = _pointer(doc, msg_ref["$ref"][1:])
            assert msg["headers"]["properties"], (cid, msg["name"])
    for name in ("AudioInFrame", "AudioOutFrame", "VadAudioChunk"):
        msg = messages[name]
        assert msg["contentType"] == "application/octet-stream"
        assert msg["payload"] == {**msg["payload"], "type": "string", "format": "binary"}
    assert {"Glx-Seq", "Glx-Capture-Ns", "Glx-Codec", "Nats-Msg-Id"} <= set(
        messages["AudioInFrame"]["headers"]["properties"])
    assert {"Glx-Turn", "Glx-Seq", "Glx-Published-Ns", "Glx-Speech-End-Ns"} <= set(
        messages["AudioOutFrame"]["headers"]["properties"])
    for name in ("UtteranceStarted", "VadAudioChunk", "UtteranceEnded"):
        assert {"Glx-Kind", "Glx-Utterance", "Glx-Seq"} <= set(messages[name]["headers"]["properties"])


def test_api_operations_are_request_reply(doc: dict[str, Any]) -> None:
    api_ops = {
        op["channel"]["$ref"].rsplit("/", 1)[1]: op
        for op in doc["operations"].values() if "reply" in op
    }
    addresses = {doc["channels"][cid]["address"] for cid in api_ops}
    assert addresses == {f"glxapi.{verb}.{{principal}}" for verb in (
        "session.start", "session.stop", "session.get", "session.find", "secrets.get",
        "npc.list", "npc.mute", "npc.speak", "npc.teach", "campaign.search", "edge.bots",
        "memory.recall")}
    replies = {"apiSecretsGet": "/secretsReply", "apiNpcList": "/npcsReply",
               "apiNpcMute": "/npcsReply", "apiEdgeBots": "/botsReply",
               "apiMemoryRecall": "/recallReply"}
    for op in api_ops.values():
        assert op["action"] == "receive"
        cid = op["channel"]["$ref"].rsplit("/", 1)[1]
        assert op["reply"]["messages"][0]["$ref"].endswith(replies.get(cid, "/apiReply"))


def _contract_subjects() -> list[str]:
    """Subject column of docs/contract.md, as AsyncAPI address patterns."""
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    subjects: list[str] = []
    for line in text.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if not m:
            continue
        subject = m.group(1)
        subject = re.sub(r"(?<=\.)T(?=\.)", "{tenant}", subject)
        subject = re.sub(r"(?<=\.)S(?=\.|$)", "{session}", subject)
        subject = re.sub(r"<(\w+)>", r"{\1}", subject)
        alts = re.search(r"\{(\w+(?:,\w+)+)\}", subject)
        if alts:
            subjects += [subject.replace(alts.group(0), alt) for alt in alts.group(1).split(",")]
        else:
            subjects.append(subject)
    return subjects


def test_every_subject_of_the_contract_is_a_channel(doc: dict[str, Any]) -> None:
    subjects = _contract_subjects()
    assert len(subjects) >= 8, subjects
    addresses = [c["address"] for c in doc["channels"].values() if c["address"]]
    for subject in subjects:
        if subject.endswith(".ctl.{type}"):
            prefix = subject.removesuffix("{type}")
            ctl = [a for a in addresses if a.startswith(prefix)]
            assert len(ctl) == len(gen._control_types()), ctl
        else:
            assert subject in addresses, f"{subject} (docs/contract.md) has no channel in asyncapi.yaml"
