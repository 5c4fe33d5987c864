"""The admin HTTP API of a real session-control process against real PostgreSQL and NATS:
auth and tenant isolation of every route (enumerated from the OpenAPI document), tenants and
their keys, secrets, campaigns and NPCs, sessions, reports and bad input.

One session-control process serves the whole module; every test makes its own tenants."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb

from glyphoxa_campaign import Campaign
from glyphoxa_session_control.models import Usage
from tests.support.control import EXAMPLE_CAMPAIGN, ControlProcess
from tests.support.service import wait_for

pytestmark = pytest.mark.integration

MAX_BODY = 8192
ROLES = ["vad", "stt", "npc-brain", "tts", "edge"]


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str,
            module_nats_url: str) -> Iterator[ControlProcess]:
    """One session-control for the module (its own nats-server unless ``NATS_URL`` is set).
    A long liveness grace keeps holder-less sessions active until a test stops them; a short
    interval ends a stopped one quickly."""
    proc = ControlProcess(module_nats_url, pg_dsn, tmp_path_factory.mktemp("control") / "session-control.log",
                          env={"SESSION_CONTROL_MAX_REQUEST_BYTES": str(MAX_BODY),
                               "SESSION_CONTROL_LIVENESS_GRACE_S": "120",
                               "SESSION_CONTROL_LIVENESS_INTERVAL_S": "0.2"})
    try:
        yield proc.start()
        log = proc.log_path.read_text()
        assert "Traceback" not in log, f"session-control logged a traceback; see {proc.log_path}"
    finally:
        proc.stop()


@pytest.fixture
async def api(control: ControlProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=control.api_url, timeout=15) as client:
        yield client


@pytest.fixture
def op(control: ControlProcess) -> dict[str, str]:
    return bearer(control.operator_key)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unique(prefix: str = "t") -> str:
    return prefix + uuid.uuid4().hex[:10]


async def new_tenant(api: httpx.AsyncClient, op: dict[str, str], tenant: str,
                     campaign_yaml: str | None = EXAMPLE_CAMPAIGN, **body: object) -> dict[str, str]:
    """Create ``tenant`` and an API key of it (and import ``campaign_yaml``); return its auth header."""
    r = await api.post("/v1/tenants", headers=op, json={"id": tenant, "name": f"Table {tenant}", **body})
    assert r.status_code == 201, r.text
    r = await api.post(f"/v1/tenants/{tenant}/api-keys", headers=op, json={"label": "tests"})
    assert r.status_code == 201, r.text
    auth = bearer(r.json()["key"])
    if campaign_yaml:
        r = await import_yaml(api, auth, campaign_yaml)
        assert r.status_code == 201, r.text
    return auth


async def import_yaml(api: httpx.AsyncClient, auth: dict[str, str], text: str | bytes,
                      replace: bool | None = None) -> httpx.Response:
    params = {} if replace is None else {"replace": str(replace).lower()}
    body = text.encode() if isinstance(text, str) else text
    return await api.post("/v1/campaigns/import", params=params, content=body,
                          headers={**auth, "Content-Type": "application/yaml"})


async def db(pg_dsn: str, sql: str, *params: object) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []


async def wait_state(api: httpx.AsyncClient, auth: dict[str, str], sid: str, state: str,
                     timeout_s: float = 15.0) -> dict:
    async def reached() -> bool:
        r = await api.get(f"/v1/sessions/{sid}", headers=auth)
        return r.json()["state"] == state
    await wait_for(reached, timeout_s)
    return (await api.get(f"/v1/sessions/{sid}", headers=auth)).json()


# --- routes, from the OpenAPI document ---------------------------------------------------

async def routes(api: httpx.AsyncClient) -> list[tuple[str, str, dict]]:
    """(METHOD, path template, operation) of every documented route."""
    r = await api.get("/openapi.json")
    assert r.status_code == 200
    return [(method.upper(), path, operation) for path, item in r.json()["paths"].items()
            for method, operation in item.items()]


def is_operator(operation: dict) -> bool:
    return "operator" in operation.get("tags", [])


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a path parameter of {path}"
    return path


async def call(api: httpx.AsyncClient, method: str, path: str, auth: dict[str, str],
               has_body: bool) -> httpx.Response:
    """A request with an empty JSON object as its body where the route takes one: the key
    must be checked before the body is."""
    if not has_body:
        return await api.request(method, path, headers=auth)
    return await api.request(method, path, content=b"{}",
                             headers={**auth, "Content-Type": "application/json"})


DUMMY = {"tenant_id": "dummy", "key_id": "kdummy", "campaign_id": "dummy", "npc_id": "dummy",
         "session_id": "dummy", "name": "dummy", "npc": "dummy", "memory_id": "1", "fact_id": "1",
         "recap_id": "1"}


async def test_every_route_needs_the_right_kind_of_key(api, op, control):
    tenant, disabled = unique(), unique()
    good = await new_tenant(api, op, tenant, campaign_yaml=None)
    r = await api.post(f"/v1/tenants/{tenant}/api-keys", headers=op, json={"label": "to revoke"})
    revoked_key, revoked_id = r.json()["key"], r.json()["id"]
    assert (await api.delete(f"/v1/tenants/{tenant}/api-keys/{revoked_id}", headers=op)).status_code == 200
    of_disabled = await new_tenant(api, op, disabled, campaign_yaml=None)
    r = await api.patch(f"/v1/tenants/{disabled}", headers=op, json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True

    nobody = {"no key": {}, "basic auth": {"Authorization": "Basic b3A6b3A="},
              "made-up key": bearer("glx_k000000000000_" + "x" * 43)}
    refused_by_operator_routes = {**nobody, "wrong operator key": bearer(control.operator_key + "x"),
                                  "tenant key": good}
    refused_by_tenant_routes = {**nobody, "operator key": op, "revoked key": bearer(revoked_key),
                                "disabled tenant's key": of_disabled}
    listed = await routes(api)
    assert len(listed) >= 30
    for method, template, operation in listed:
        path, has_body = fill(template, DUMMY), "requestBody" in operation
        operator = is_operator(operation)
        refusing = refused_by_operator_routes if operator else refused_by_tenant_routes
        for who, auth in refusing.items():
            r = await call(api, method, path, auth, has_body)
            assert r.status_code == 401, f"{method} {template} with {who}: {r.status_code} {r.text}"
            assert r.headers["www-authenticate"] == "Bearer"
            assert "key" in r.json()["error"]
        r = await call(api, method, path, op if operator else good, has_body)
        assert r.status_code not in (401, 403, 500), f"{method} {template}: {r.status_code} {r.text}"

    # the disabled tenant's key works again once it is enabled
    assert (await api.get("/v1/me", headers=of_disabled)).status_code == 401
    await api.patch(f"/v1/tenants/{disabled}", headers=op, json={"disabled": False})
    r = await api.get("/v1/me", headers=of_disabled)
    assert r.status_code == 200 and r.json()["id"] == disabled


# --- tenant isolation -----------------------------------------------------------------------

A_CAMPAIGN = """\
name: Vault Of Alpha
npcs:
  - name: Vault Keeper
    persona: ALPHA-ONLY persona, never to be seen by another tenant.
  - name: Warden
    persona: ALPHA-ONLY warden.
"""
B_NPC = {"name": "Vault Keeper", "persona": "tenant B tries to overwrite"}
B_CAMPAIGN = {"name": "Bravo Own", "npcs": [{"name": "Bee", "persona": "B's own NPC."}]}
B_SAME_ID = {**B_CAMPAIGN, "name": "vault of alpha"}  # becomes A's campaign id, in B's namespace

# What tenant B gets from each tenant route when it names tenant A's ids. A PUT is an upsert
# inside B's own namespace (B gets its own secret / campaign of that id; A's is untouched);
# the routes without ids answer about B only.
ISOLATION: dict[tuple[str, str], tuple[int, object]] = {
    ("GET", "/v1/me"): (200, None),
    ("GET", "/v1/usage"): (200, None),
    ("GET", "/v1/secrets"): (200, None),
    ("PUT", "/v1/secrets/{name}"): (200, {"value": "b-own-value"}),
    ("DELETE", "/v1/secrets/{name}"): (404, None),
    ("GET", "/v1/campaigns"): (200, None),
    ("POST", "/v1/campaigns"): (201, B_CAMPAIGN),
    ("POST", "/v1/campaigns/import"): (201, yaml.safe_dump({**B_CAMPAIGN, "name": "Bravo Imported"})),
    ("GET", "/v1/campaigns/{campaign_id}"): (404, None),
    ("PUT", "/v1/campaigns/{campaign_id}"): (200, B_SAME_ID),
    ("DELETE", "/v1/campaigns/{campaign_id}"): (404, None),
    ("GET", "/v1/campaigns/{campaign_id}/export"): (404, None),
    ("GET", "/v1/campaigns/{campaign_id}/npcs"): (404, None),
    ("POST", "/v1/campaigns/{campaign_id}/npcs"): (404, {"name": "Intruder", "persona": "B's."}),
    ("GET", "/v1/campaigns/{campaign_id}/npcs/{npc_id}"): (404, None),
    ("PUT", "/v1/campaigns/{campaign_id}/npcs/{npc_id}"): (404, B_NPC),
    ("DELETE", "/v1/campaigns/{campaign_id}/npcs/{npc_id}"): (404, None),
    ("POST", "/v1/sessions"): (404, "A_CAMPAIGN"),
    ("GET", "/v1/sessions"): (200, None),
    ("GET", "/v1/sessions/{session_id}"): (404, None),
    ("POST", "/v1/sessions/{session_id}/stop"): (404, {"reason": "tenant B says stop"}),
    ("GET", "/v1/sessions/{session_id}/transcript"): (404, None),
    ("GET", "/v1/sessions/{session_id}/turns"): (404, None),
    ("GET", "/v1/sessions/{session_id}/timeline"): (404, None),
    ("GET", "/v1/sessions/{session_id}/campaign"): (404, None),
    ("GET", "/v1/sessions/{session_id}/npcs"): (404, None),
    ("POST", "/v1/sessions/{session_id}/npcs/{npc}/mute"): (404, None),
    ("POST", "/v1/sessions/{session_id}/npcs/{npc}/unmute"): (404, None),
    ("POST", "/v1/sessions/{session_id}/npcs/{npc}/speak"): (404, {"text": "B puppets A's NPC"}),
    ("GET", "/v1/campaigns/{campaign_id}/search"): (404, "SEARCH"),
    ("GET", "/v1/campaigns/{campaign_id}/npcs/{npc_id}/memories"): (404, None),
    ("PATCH", "/v1/campaigns/{campaign_id}/memories/{memory_id}"): (404, {"text": "B rewrites A's"}),
    ("DELETE", "/v1/campaigns/{campaign_id}/memories/{memory_id}"): (404, None),
    ("GET", "/v1/campaigns/{campaign_id}/npcs/{npc_id}/facts"): (404, None),
    ("POST", "/v1/campaigns/{campaign_id}/npcs/{npc_id}/facts"): (404, {"text": "B teaches A's NPC"}),
    ("DELETE", "/v1/campaigns/{campaign_id}/npcs/{npc_id}/facts/{fact_id}"): (404, None),
    ("GET", "/v1/campaigns/{campaign_id}/npcs/{npc_id}/recaps"): (404, None),
    ("PUT", "/v1/campaigns/{campaign_id}/recaps/{recap_id}"): (404, {"text": "B rewrites A's"}),
    ("DELETE", "/v1/campaigns/{campaign_id}/recaps/{recap_id}"): (404, None),
}
UPSERTS = {("PUT", "/v1/secrets/{name}"), ("PUT", "/v1/campaigns/{campaign_id}")}


async def snapshot(api: httpx.AsyncClient, auth: dict[str, str], pg_dsn: str, tenant: str,
                   cid: str, sid: str) -> dict[str, object]:
    """Everything tenant A can see of its own data (less the clock-driven session seconds)."""
    out: dict[str, object] = {}
    for path in ("/v1/me", "/v1/secrets", "/v1/campaigns", f"/v1/campaigns/{cid}",
                 f"/v1/campaigns/{cid}/npcs", f"/v1/campaigns/{cid}/export", "/v1/sessions",
                 f"/v1/sessions/{sid}", f"/v1/sessions/{sid}/transcript", f"/v1/sessions/{sid}/turns",
                 f"/v1/sessions/{sid}/npcs", f"/v1/campaigns/{cid}/search?q=alpha",
                 f"/v1/campaigns/{cid}/npcs/vault-keeper/memories",
                 f"/v1/campaigns/{cid}/npcs/vault-keeper/facts",
                 f"/v1/campaigns/{cid}/npcs/vault-keeper/recaps",
                 "/v1/usage"):
        r = await api.get(path, headers=auth)
        assert r.status_code == 200, f"{path}: {r.text}"
        out[path] = r.json() if r.headers["content-type"].startswith("application/json") else r.text
    out["/v1/usage"].pop("session_seconds")  # type: ignore[union-attr]
    for path, value in out.items():  # the indexer embeds memories whenever it gets to them
        if path.endswith(("/memories", "/facts")):
            for row in value:  # type: ignore[union-attr]
                row.pop("embedded"), row.pop("embed_model")
    out["db secrets"] = await db(pg_dsn, "SELECT name, encrypted FROM tenant_secrets WHERE tenant_id = %s"
                                 " ORDER BY name", tenant)
    return out


NUL_BODIES = {  # a body each route would take, but for one NUL character
    "TenantCreate": ({"id": "nul-tenant", "name": "Table\u0000"}, "body.name"),
    "TenantPatch": ({"name": "Table\u0000"}, "body.name"),
    "ApiKeyCreate": ({"label": "ci\u0000"}, "body.label"),
    "SecretValue": ({"value": "key\u0000"}, "body.value"),
    "Campaign": ({"name": "Forge", "npcs": [{"name": "Greta", "persona": "A smith\u0000"}]},
                 "body.npcs.0.persona"),
    "Npc": ({"name": "Greta", "persona": "A smith\u0000"}, "body.persona"),
    "SessionCreate": ({"campaign": "forge", "guild_id": "1\u0000"}, "body.guild_id"),
    "SessionStop": ({"reason": "done\u0000"}, "body.reason"),
    "NpcLine": ({"text": "Welcome\u0000"}, "body.text"),
    "MemoryEdit": ({"text": "Greta\u0000 remembers"}, "body.text"),
    "FactCreate": ({"text": "The key\u0000"}, "body.text"),
    "RecapEdit": ({"text": "Recap\u0000"}, "body.text"),
}


async def test_every_body_with_a_nul_character_is_refused_as_422_naming_where(api, op):
    """PostgreSQL cannot store U+0000: a GM's or an operator's text holding it is refused where
    it enters, naming the field, never a 500 from the database."""
    tenant = unique()
    auth = await new_tenant(api, op, tenant)
    sid = (await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})).json()["id"]
    values = {**DUMMY, "tenant_id": tenant, "campaign_id": "forge", "session_id": sid,
              "npc_id": "greta", "npc": "greta", "name": "gemini", "memory_id": "1",
              "fact_id": "1", "recap_id": "1"}
    checked = set()
    for method, template, operation in await routes(api):
        if "requestBody" not in operation:
            continue
        path, who = fill(template, values), op if is_operator(operation) else auth
        schema = json.dumps(operation["requestBody"]["content"])
        if "application/yaml" in operation["requestBody"]["content"]:
            r = await api.request(method, path, headers={**who, "Content-Type": "application/yaml"},
                                  content="name: X\nnpcs:\n  - name: Greta\n    persona: \"a\\0b\"\n")
            assert r.status_code == 422 and r.json()["error"].startswith("line 4: npcs[0].persona: text must not contain NUL"), r.text
            checked.add("yaml")
            continue
        name = next(n for n in NUL_BODIES if f"/schemas/{n}\"" in schema)
        body, field = NUL_BODIES[name]
        r = await api.request(method, path, headers=who, json=body)
        assert r.status_code == 422, f"{method} {template}: {r.status_code} {r.text}"
        assert r.json()["error"].startswith(field + ":"), f"{method} {template}: {r.text}"
        checked.add(name)
    assert checked == {*NUL_BODIES, "yaml"}


async def test_a_tenant_can_neither_read_nor_change_another_tenants_data(api, op, pg_dsn):
    a, b = unique("ta"), unique("tb")
    a_auth = await new_tenant(api, op, a, campaign_yaml=A_CAMPAIGN, tier={"max_concurrent_sessions": 3})
    b_auth = await new_tenant(api, op, b, tier={"max_concurrent_sessions": 3})
    cid, npc = "vault-of-alpha", "vault-keeper"
    assert (await api.put("/v1/secrets/alphakey", headers=a_auth,
                          json={"value": "ALPHA-SECRET-VALUE"})).status_code == 200
    r = await api.post("/v1/sessions", headers=a_auth, json={"campaign": cid})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    # something recorded for A's session, so leaks would show
    await db(pg_dsn, "INSERT INTO transcript_lines (tenant_id, session_id, turn_id, role, speaker, text,"
             " spoken_ns) VALUES (%s, %s, 'u1', 'player', 'alice', 'ALPHA-ONLY words', 1)", a, sid)
    await db(pg_dsn, "INSERT INTO turns (tenant_id, session_id, turn_id, speaker, npc, outcome,"
             " transcript, latency) VALUES (%s, %s, 'u1', 'alice', %s, 'answered', 'ALPHA-ONLY words',"
             " %s)", a, sid, npc, Jsonb({"total_ms": 900}))
    await db(pg_dsn, "INSERT INTO usage_events (tenant_id, session_id, metric, key, amount)"
             " VALUES (%s, %s, 'tts_characters', 'u1', 4242)", a, sid)
    # and remembered: an exchange, a fact, a recap
    [(memory_id,)] = await db(
        pg_dsn, "INSERT INTO memories (tenant_id, campaign_id, session_id, turn_id, kind, speaker, npc,"
        " witnesses, player_text, text) VALUES (%s, %s, %s, 'u1', 'exchange', 'alice', %s, ARRAY[%s],"
        " 'ALPHA-ONLY words', 'alice to Vault Keeper: ALPHA-ONLY words') RETURNING id", a, cid, sid, npc, npc)
    r = await api.post(f"/v1/campaigns/{cid}/npcs/{npc}/facts", headers=a_auth,
                       json={"text": "ALPHA-ONLY fact"})
    assert r.status_code == 201, r.text
    fact_id = r.json()["id"]
    [(recap_id,)] = await db(
        pg_dsn, "INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status, text)"
        " VALUES (%s, %s, %s, %s, 'done', 'ALPHA-ONLY recap') RETURNING id", a, cid, sid, npc)
    before = await snapshot(api, a_auth, pg_dsn, a, cid, sid)
    assert before[f"/v1/sessions/{sid}/transcript"][0]["text"] == "ALPHA-ONLY words"  # type: ignore[index]
    assert before["/v1/usage"]["tts_characters"] == 4242  # type: ignore[index]

    tenant_routes = {(m, p) for m, p, operation in await routes(api) if not is_operator(operation)}
    assert tenant_routes == set(ISOLATION), "classify every tenant route in ISOLATION"
    a_ids = {"campaign_id": cid, "npc_id": npc, "session_id": sid, "name": "alphakey", "npc": npc,
             "memory_id": str(memory_id), "fact_id": str(fact_id), "recap_id": str(recap_id)}
    leaks = (a, "ALPHA-ONLY", "ALPHA-SECRET-VALUE", "Vault Of Alpha", "Vault Keeper")
    for method, template in sorted(ISOLATION, key=lambda route: (route in UPSERTS, route)):
        status, body = ISOLATION[(method, template)]
        kwargs: dict[str, object] = {}
        if body == "A_CAMPAIGN":
            kwargs["json"] = {"campaign": cid}
        elif body == "SEARCH":
            kwargs["params"] = {"q": "alpha words"}
        elif isinstance(body, str):
            kwargs = {"content": body.encode(), "headers": {**b_auth, "Content-Type": "application/yaml"}}
        elif body is not None:
            kwargs["json"] = body
        r = await api.request(method, fill(template, a_ids), **{"headers": b_auth, **kwargs})
        assert r.status_code == status, f"{method} {template}: {r.status_code} {r.text}"
        for leak in leaks:
            assert leak not in r.text, f"{method} {template} shows {leak!r}: {r.text}"
        if (method, template) == ("PUT", "/v1/campaigns/{campaign_id}"):
            assert r.json()["id"] == cid and r.json()["name"] == "vault of alpha"

    assert await snapshot(api, a_auth, pg_dsn, a, cid, sid) == before
    # B's upserts landed in B's own namespace
    r = await api.get(f"/v1/campaigns/{cid}", headers=b_auth)
    assert Campaign.model_validate(r.json()) == Campaign.model_validate(B_SAME_ID)
    assert [s["name"] for s in (await api.get("/v1/secrets", headers=b_auth)).json()] == ["alphakey"]
    usage_b = (await api.get("/v1/usage", headers=b_auth)).json()
    assert usage_b["tenant"] == b and usage_b["tts_characters"] == 0 and usage_b["sessions_live"] == 0
    rows = await db(pg_dsn, "SELECT actor, action FROM audit_log WHERE tenant_id = %s"
                    " AND actor NOT IN ('operator', %s)", a, f"tenant:{a}")
    assert rows == []
    await api.post(f"/v1/sessions/{sid}/stop", headers=a_auth)


# --- campaign memory: search, memories, facts, recaps ----------------------------------------

async def _memory_fixture(api, op, pg_dsn) -> tuple[str, dict[str, str], str, str]:
    tenant = unique()
    auth = await new_tenant(api, op, tenant)
    snapshot = Jsonb((await api.get("/v1/campaigns/forge", headers=auth)).json())
    s1, s2 = unique("s"), unique("s")
    for sid in (s1, s2):
        await db(pg_dsn, "INSERT INTO sessions (tenant_id, id, campaign_id, campaign, edge)"
                 " VALUES (%s, %s, 'forge', %s, 'sim')", tenant, sid, snapshot)
    return tenant, auth, s1, s2


async def audit_actions(pg_dsn: str, tenant: str) -> list[tuple]:
    return await db(pg_dsn, "SELECT actor, action, target FROM audit_log WHERE tenant_id = %s"
                    " AND action LIKE ANY (ARRAY['memory.%%', 'fact.%%', 'recap.%%']) ORDER BY id", tenant)


async def test_transcript_search_across_a_campaigns_sessions_newest_first(api, op, pg_dsn):
    tenant, auth, s1, s2 = await _memory_fixture(api, op, pg_dsn)
    t0 = 1_750_000_000 * 10**9
    for sid, turn, role, who, text, at in (
            (s1, "a-1", "player", "sam", "We swore to hunt the red dragon.", t0),
            (s1, "a-1", "npc", "greta", "The dragon will burn you.", t0 + 10**9),
            (s2, "b-1", "player", "ana", "Is the dragon dead yet?", t0 + 7 * 86400 * 10**9),
            (s2, "b-2", "player", "ana", "Two ales please.", t0 + 7 * 86401 * 10**9)):
        await db(pg_dsn, "INSERT INTO transcript_lines (tenant_id, session_id, turn_id, role, speaker,"
                 " text, spoken_ns) VALUES (%s, %s, %s, %s, %s, %s, %s)", tenant, sid, turn, role, who, text, at)
    r = await api.get("/v1/campaigns/forge/search", headers=auth, params={"q": "dragon"})
    assert r.status_code == 200, r.text
    hits = r.json()
    assert [(h["session"], h["turn_id"], h["role"], h["speaker"]) for h in hits] == [
        (s2, "b-1", "player", "ana"), (s1, "a-1", "npc", "greta"), (s1, "a-1", "player", "sam")]
    assert datetime.fromisoformat(hits[0]["at"]) == datetime.fromtimestamp((t0 + 7 * 86400 * 10**9) / 1e9, UTC)
    r = await api.get("/v1/campaigns/forge/search", headers=auth,
                      params={"q": "dragon", "limit": 1, "before": hits[0]["at"]})
    assert [h["turn_id"] + h["role"] for h in r.json()] == ["a-1npc"]
    r = await api.get("/v1/campaigns/forge/search", headers=auth, params={"q": '"red dragon" -burn'})
    assert [h["speaker"] for h in r.json()] == ["sam"]
    for params, where in (({}, "query.q"), ({"q": ""}, "query.q"), ({"q": "x", "limit": 0}, "query.limit"),
                          ({"q": "x", "before": "yesterday"}, "query.before")):
        r = await api.get("/v1/campaigns/forge/search", headers=auth, params=params)
        assert r.status_code == 422 and r.json()["error"].startswith(where), r.text
    r = await api.get("/v1/campaigns/forge/search", headers=auth, params={"q": "dra\u0000gon"})
    assert r.status_code == 422 and r.json()["error"] == "q: text must not contain NUL"
    r = await api.get("/v1/campaigns/nowhere/search", headers=auth, params={"q": "dragon"})
    assert r.status_code == 404 and r.json()["error"] == "no campaign 'nowhere'"


async def test_memories_facts_and_recaps_are_listed_edited_and_deleted_with_audit(api, op, pg_dsn):
    tenant, auth, s1, s2 = await _memory_fixture(api, op, pg_dsn)
    ids = []
    for n in range(3):
        [(mid,)] = await db(
            pg_dsn, "INSERT INTO memories (tenant_id, campaign_id, session_id, turn_id, kind, speaker,"
            " npc, present, witnesses, player_text, text, embedding, embed_model) VALUES (%s, 'forge', %s,"
            " %s, 'exchange', 'sam', 'greta', ARRAY['greta'], ARRAY['greta'], 'hi', %s,"
            " array_fill(0.05, ARRAY[384])::vector, 'm') RETURNING id",
            tenant, s1, f"u{n}", f"sam to Greta: line {n}")
        ids.append(mid)
    base = "/v1/campaigns/forge"

    # memories: newest first, paged, only the NPC's
    r = await api.get(f"{base}/npcs/greta/memories", headers=auth, params={"limit": 2})
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()] == [ids[2], ids[1]] and r.json()[0]["embedded"] is True
    r = await api.get(f"{base}/npcs/greta/memories", headers=auth, params={"before_id": ids[1]})
    assert [m["id"] for m in r.json()] == [ids[0]]
    assert (await api.get(f"{base}/npcs/tobias/memories", headers=auth)).json() == []
    r = await api.get(f"{base}/npcs/nobody/memories", headers=auth)
    assert r.status_code == 404 and r.json()["error"] == "no NPC 'nobody' in campaign 'forge'"

    r = await api.patch(f"{base}/memories/{ids[0]}", headers=auth, json={"text": "Sam owes Greta 5 gold."})
    assert r.status_code == 200, r.text
    edited = r.json()
    assert (edited["text"], edited["embedded"], edited["edited_by"]) == (
        "Sam owes Greta 5 gold.", False, f"tenant:{tenant}")  # embedded again by the indexer
    for body, where in (({"text": ""}, "body.text"), ({"text": "   "}, "body.text"),
                        ({"text": "a", "npc": "x"}, "body.npc"),
                        ({}, "body.text")):
        r = await api.patch(f"{base}/memories/{ids[0]}", headers=auth, json=body)
        assert r.status_code == 422 and r.json()["error"].startswith(where), r.text
    for bad in ("0", "abc", str(2**63)):
        r = await api.patch(f"{base}/memories/{bad}", headers=auth, json={"text": "x"})
        assert r.status_code == 422 and r.json()["error"].startswith("path.memory_id"), r.text
    r = await api.patch(f"{base}/memories/999999999", headers=auth, json={"text": "x"})
    assert r.status_code == 404 and r.json()["error"] == "no memory 999999999 in campaign 'forge'"
    assert (await api.delete(f"{base}/memories/{ids[1]}", headers=auth)).status_code == 204
    assert (await api.delete(f"{base}/memories/{ids[1]}", headers=auth)).status_code == 404
    assert len((await api.get(f"{base}/npcs/greta/memories", headers=auth)).json()) == 2

    # facts: taught to one NPC, listed, deleted only through that NPC
    r = await api.post(f"{base}/npcs/greta/facts", headers=auth, json={"text": "The duke is a vampire."})
    assert r.status_code == 201, r.text
    fact = r.json()
    assert (fact["kind"], fact["npc"], fact["witnesses"], fact["taught_by"], fact["session"]) == (
        "fact", "greta", ["greta"], f"tenant:{tenant}", None)
    assert [f["id"] for f in (await api.get(f"{base}/npcs/greta/facts", headers=auth)).json()] == [fact["id"]]
    assert (await api.get(f"{base}/npcs/tobias/facts", headers=auth)).json() == []
    r = await api.get(f"{base}/npcs/greta/memories", headers=auth, params={"kind": "fact"})
    assert [m["id"] for m in r.json()] == [fact["id"]]
    for body, where in (({"text": "x" * 301}, "body.text"), ({"text": " "}, "body.text"),
                        ({"fact": "x"}, "body.text")):
        r = await api.post(f"{base}/npcs/greta/facts", headers=auth, json=body)
        assert r.status_code == 422 and r.json()["error"].startswith(where), r.text
    r = await api.post(f"{base}/npcs/nobody/facts", headers=auth, json={"text": "x"})
    assert r.status_code == 404 and r.json()["error"] == "no NPC 'nobody' in campaign 'forge'"
    r = await api.delete(f"{base}/npcs/tobias/facts/{fact['id']}", headers=auth)
    assert r.status_code == 404 and "for NPC 'tobias'" in r.json()["error"]
    r = await api.delete(f"{base}/npcs/greta/facts/{ids[0]}", headers=auth)  # an exchange, not a fact
    assert r.status_code == 404
    assert (await api.delete(f"{base}/npcs/greta/facts/{fact['id']}", headers=auth)).status_code == 204
    assert (await api.get(f"{base}/npcs/greta/facts", headers=auth)).json() == []

    # recaps
    [(rid,)] = await db(pg_dsn, "INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status,"
                        " error, attempts) VALUES (%s, 'forge', %s, 'greta', 'failed', 'llm: timeout', 5)"
                        " RETURNING id", tenant, s2)
    [(rid_old,)] = await db(pg_dsn, "INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status,"
                            " text, created_at) VALUES (%s, 'forge', %s, 'greta', 'done', 'Greta met Sam.',"
                            " now() - interval '7 days') RETURNING id", tenant, s1)
    r = await api.get(f"{base}/npcs/greta/recaps", headers=auth)
    assert r.status_code == 200 and [x["id"] for x in r.json()] == [rid, rid_old]
    assert (r.json()[0]["status"], r.json()[0]["error"], r.json()[0]["attempts"]) == ("failed", "llm: timeout", 5)
    r = await api.put(f"{base}/recaps/{rid}", headers=auth, json={"text": "Greta forged a spear for Sam."})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["error"], r.json()["edited_by"]) == ("done", None, f"tenant:{tenant}")
    r = await api.put(f"{base}/recaps/{rid}", headers=auth, json={"text": "x" * 1501})
    assert r.status_code == 422 and r.json()["error"].startswith("body.text")
    assert (await api.put(f"{base}/recaps/999999999", headers=auth, json={"text": "x"})).status_code == 404
    r = await api.get(f"{base}/npcs/nobody/recaps", headers=auth)
    assert r.status_code == 404 and r.json()["error"] == "no NPC 'nobody' in campaign 'forge'"
    assert (await api.delete(f"{base}/recaps/{rid_old}", headers=auth)).status_code == 204
    assert (await api.delete(f"{base}/recaps/{rid_old}", headers=auth)).status_code == 404
    assert [x["id"] for x in (await api.get(f"{base}/npcs/greta/recaps", headers=auth)).json()] == [rid]

    actor = f"tenant:{tenant}"
    assert await audit_actions(pg_dsn, tenant) == [
        (actor, "memory.edit", f"forge/{ids[0]}"), (actor, "memory.delete", f"forge/{ids[1]}"),
        (actor, "fact.teach", f"forge/{fact['id']}"), (actor, "fact.delete", f"forge/{fact['id']}"),
        (actor, "recap.edit", f"forge/{rid}"), (actor, "recap.delete", f"forge/{rid_old}")]

    # replacing the campaign keeps its memory; deleting it deletes its memory
    yaml_text = (await api.get(f"{base}/export", headers=auth)).text
    assert (await import_yaml(api, auth, yaml_text, replace=True)).status_code == 201
    assert len((await api.get(f"{base}/npcs/greta/memories", headers=auth)).json()) == 2
    assert (await api.delete(base, headers=auth)).status_code == 204
    left = await db(pg_dsn, "SELECT (SELECT count(*) FROM memories WHERE tenant_id = %s),"
                    " (SELECT count(*) FROM npc_recaps WHERE tenant_id = %s)", tenant, tenant)
    assert left == [(0, 0)]
    assert (await api.get(f"{base}/npcs/greta/memories", headers=auth)).status_code == 404


# --- tenants, API keys and the audit log (operator) -----------------------------------------

async def test_tenants_api_keys_and_audit(api, op, pg_dsn):
    tenant = unique()
    bot_token = "MTAx.bot-token." + uuid.uuid4().hex
    r = await api.post("/v1/tenants", headers=op, json={
        "id": tenant, "name": "Friday Table", "tier": {"max_concurrent_sessions": 2, "monthly_session_hours": 7.5},
        "allowed_guild_ids": ["111"], "bot_token": bot_token})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"] == tenant and created["name"] == "Friday Table"
    assert created["tier"] == {"max_concurrent_sessions": 2, "monthly_session_hours": 7.5}
    assert created["allowed_guild_ids"] == ["111"] and created["bot_token_set"] is True
    assert created["disabled"] is False and "bot_token" not in created and bot_token not in r.text

    r = await api.post("/v1/tenants", headers=op, json={"id": tenant, "name": "again"})
    assert r.status_code == 409 and tenant in r.json()["error"]
    for body, field in [({"id": "Bad Id!", "name": "x"}, "body.id"),
                        ({"id": unique(), "name": "x", "tier": {"max_concurrent_sessions": -1}},
                         "body.tier.max_concurrent_sessions"),
                        ({"id": unique(), "name": "x", "tier": {"monthly_session_hours": -2}},
                         "body.tier.monthly_session_hours"),
                        ({"id": unique(), "name": ""}, "body.name"),
                        ({"id": unique(), "name": "x", "allowed_guild_ids": ["not-a-snowflake"]},
                         "body.allowed_guild_ids.0"),
                        ({"id": unique(), "name": "x", "secret": 1}, "body.secret")]:
        r = await api.post("/v1/tenants", headers=op, json=body)
        assert r.status_code == 422 and r.json()["error"].startswith(field + ":"), r.text
    assert (await api.get("/v1/tenants/Bad.Id", headers=op)).status_code == 422

    r = await api.get("/v1/tenants", headers=op)
    assert r.status_code == 200 and [t for t in r.json() if t["id"] == tenant] == [created]
    assert bot_token not in r.text
    r = await api.get(f"/v1/tenants/{tenant}", headers=op)
    assert r.status_code == 200 and r.json() == created
    assert (await api.get(f"/v1/tenants/{unique()}", headers=op)).status_code == 404

    new_token = "MTAy.rotated." + uuid.uuid4().hex
    r = await api.patch(f"/v1/tenants/{tenant}", headers=op, json={
        "tier": {"max_concurrent_sessions": 4, "monthly_session_hours": 30},
        "allowed_guild_ids": ["111", "222"], "bot_token": new_token})
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["tier"] == {"max_concurrent_sessions": 4, "monthly_session_hours": 30.0}
    assert patched["allowed_guild_ids"] == ["111", "222"] and patched["name"] == "Friday Table"
    assert patched["bot_token_set"] is True and new_token not in r.text
    assert datetime.fromisoformat(patched["updated_at"]) > datetime.fromisoformat(created["updated_at"])
    assert (await api.get(f"/v1/tenants/{tenant}", headers=op)).json() == patched
    assert (await api.patch(f"/v1/tenants/{unique()}", headers=op, json={"name": "x"})).status_code == 404
    r = await api.patch(f"/v1/tenants/{tenant}", headers=op, json={"tier": {"max_concurrent_sessions": -3}})
    assert r.status_code == 422 and "body.tier.max_concurrent_sessions" in r.json()["error"]

    [(stored,)] = await db(pg_dsn, "SELECT bot_token_encrypted FROM tenants WHERE id = %s", tenant)
    assert stored and new_token.encode() not in bytes(stored) and bot_token.encode() not in bytes(stored)
    assert b"rotated" not in bytes(stored)

    # API keys: shown once, stored as a hash, revocable
    r = await api.post(f"/v1/tenants/{tenant}/api-keys", headers=op, json={"label": "laptop"})
    assert r.status_code == 201, r.text
    made = r.json()
    key = made["key"]
    assert key.startswith("glx_") and made["label"] == "laptop" and made["revoked_at"] is None
    assert (await api.get("/v1/me", headers=bearer(key))).json()["id"] == tenant
    r = await api.get(f"/v1/tenants/{tenant}/api-keys", headers=op)
    assert r.status_code == 200 and key not in r.text
    assert [{k: v for k, v in made.items() if k != "key"}] == r.json()
    [(digest,)] = await db(pg_dsn, "SELECT key_sha256 FROM api_keys WHERE id = %s", made["id"])
    assert bytes(digest) == hashlib.sha256(key.encode()).digest()
    assert (await api.post(f"/v1/tenants/{unique()}/api-keys", headers=op, json={})).status_code == 404
    assert (await api.get(f"/v1/tenants/{unique()}/api-keys", headers=op)).status_code == 404
    assert (await api.delete(f"/v1/tenants/{tenant}/api-keys/knope", headers=op)).status_code == 404

    r = await api.delete(f"/v1/tenants/{tenant}/api-keys/{made['id']}", headers=op)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None and key not in r.text
    r = await api.get("/v1/me", headers=bearer(key))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    [listed] = (await api.get(f"/v1/tenants/{tenant}/api-keys", headers=op)).json()
    assert listed["revoked_at"] is not None

    # disabling refuses the tenant's keys
    key2 = (await api.post(f"/v1/tenants/{tenant}/api-keys", headers=op, json={})).json()["key"]
    assert (await api.get("/v1/me", headers=bearer(key2))).status_code == 200
    r = await api.patch(f"/v1/tenants/{tenant}", headers=op, json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (await api.get("/v1/me", headers=bearer(key2))).status_code == 401
    await api.patch(f"/v1/tenants/{tenant}", headers=op, json={"disabled": False})
    assert (await api.put("/v1/secrets/gemini", headers=bearer(key2), json={"value": "GEMINI-SECRET"})
            ).status_code == 200

    # the audit log names every action and no secret
    r = await api.get("/v1/audit", headers=op, params={"tenant_id": tenant})
    assert r.status_code == 200
    entries = r.json()
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["tenant.create", "tenant.update", "api_key.create", "api_key.revoke",
                       "api_key.create", "tenant.update", "tenant.update", "secret.put"]
    assert {e["tenant_id"] for e in entries} == {tenant}
    assert {e["actor"] for e in entries} == {"operator", f"tenant:{tenant}"}
    assert entries[-1]["details"]["bot_token_set"] is True
    # the key's secret part is what follows glx_<id>_ (it may hold "_" itself)
    for secret in (bot_token, new_token, key, key2, "GEMINI-SECRET", key.split("_", 2)[2]):
        assert secret not in r.text
    r = await api.get("/v1/audit", headers=op, params={"tenant_id": tenant, "limit": 2})
    assert [e["action"] for e in r.json()] == ["secret.put", "tenant.update"]
    assert (await api.get("/v1/audit", headers=op, params={"limit": 0})).status_code == 422

    # and it is append-only in PostgreSQL itself
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        for sql in ("UPDATE audit_log SET actor = 'forger' WHERE tenant_id = %s",
                    "DELETE FROM audit_log WHERE tenant_id = %s", "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await conn.execute(sql, (tenant,) if "%s" in sql else ())
            await conn.rollback()
    assert len((await api.get("/v1/audit", headers=op, params={"tenant_id": tenant})).json()) == 8


# --- secrets (tenant) ---------------------------------------------------------------------

async def test_secrets_are_stored_encrypted_and_never_shown(api, op, pg_dsn):
    tenant = unique()
    auth = await new_tenant(api, op, tenant, campaign_yaml=None)
    value = "dg-" + uuid.uuid4().hex
    r = await api.put("/v1/secrets/deepgram", headers=auth, json={"value": value})
    assert r.status_code == 200 and r.json()["name"] == "deepgram" and value not in r.text
    [(sealed,)] = await db(pg_dsn, "SELECT encrypted FROM tenant_secrets WHERE tenant_id = %s"
                           " AND name = 'deepgram'", tenant)
    assert value.encode() not in bytes(sealed) and value[3:].encode() not in bytes(sealed)
    r = await api.put("/v1/secrets/deepgram", headers=auth, json={"value": value + "-rotated"})
    assert r.status_code == 200
    [(resealed,)] = await db(pg_dsn, "SELECT encrypted FROM tenant_secrets WHERE tenant_id = %s"
                             " AND name = 'deepgram'", tenant)
    assert bytes(resealed) != bytes(sealed)
    await api.put("/v1/secrets/eleven_labs", headers=auth, json={"value": "el-value"})

    r = await api.get("/v1/secrets", headers=auth)
    assert r.status_code == 200 and [s["name"] for s in r.json()] == ["deepgram", "eleven_labs"]
    assert all(set(s) == {"name", "updated_at"} for s in r.json()) and value not in r.text

    assert (await api.delete("/v1/secrets/deepgram", headers=auth)).status_code == 204
    assert [s["name"] for s in (await api.get("/v1/secrets", headers=auth)).json()] == ["eleven_labs"]
    assert await db(pg_dsn, "SELECT 1 FROM tenant_secrets WHERE tenant_id = %s AND name = 'deepgram'",
                    tenant) == []
    r = await api.delete("/v1/secrets/deepgram", headers=auth)
    assert r.status_code == 404 and "deepgram" in r.json()["error"]

    for name in ("DeepGram", "deep-gram", "_x", "a" * 65, "dg%20x"):
        r = await api.put(f"/v1/secrets/{name}", headers=auth, json={"value": "v"})
        assert r.status_code == 422 and r.json()["error"].startswith("path.name:"), (name, r.text)
    for body, field in [({"value": ""}, "body.value"), ({}, "body.value"),
                        ({"value": "v", "extra": 1}, "body.extra"), ({"value": "v" * 4001}, "body.value")]:
        r = await api.put("/v1/secrets/deepgram", headers=auth, json=body)
        assert r.status_code == 422 and r.json()["error"].startswith(field), r.text
    assert [s["name"] for s in (await api.get("/v1/secrets", headers=auth)).json()] == ["eleven_labs"]
    audit = (await api.get("/v1/audit", headers=op, params={"tenant_id": tenant})).text
    assert "secret.put" in audit and "secret.delete" in audit and value not in audit


# --- campaigns and NPCs (tenant) ----------------------------------------------------------

MOON_KEEP = {"name": "Moon Keep", "npcs": [
    {"name": "Ayla", "persona": "A lighthouse keeper."},
    {"name": "Bren", "aliases": ["Old Bren"], "persona": "A fisherman.", "address_only": True}]}

RICH_CAMPAIGN = """\
name: Émile's Harbour
llm: {provider: gemini, model: gemini-2.5-flash-lite}
npcs:
  - name: Captain Voss
    aliases: [Voss, The Captain]
    persona: |
      A grizzled captain.
      Speaks in short sentences: "Aye."
    voice: {provider: espeak, pitch: 0.8, rate: 140, espeak_voice: en-gb}
    address_only: true
  - name: Lí Na
    persona: 'A merchant; sells maps # not a comment'
    voice: {length_scale: 1.3, noise_scale: 0.2}
    llm: {provider: openai, model: gpt-4o-mini, temperature: 0.9}
"""


async def test_a_campaign_may_not_put_test_doubles_in_front_of_players(api, op):
    auth = await new_tenant(api, op, unique())
    fake_voice = {"name": "Moon Keep", "npcs": [
        {"name": "Ayla", "persona": "A keeper.", "voice": {"provider": "fake"}}]}
    r = await api.post("/v1/campaigns", headers=auth, json=fake_voice)
    assert r.status_code == 422 and r.json()["error"].startswith("npcs.0.voice.provider:"), r.text
    r = await api.post("/v1/campaigns/import", headers={**auth, "Content-Type": "application/yaml"},
                       content="name: X\nllm: {provider: fake}\nnpcs:\n  - {name: A, persona: p}\n")
    assert r.status_code == 422 and r.json()["error"].startswith("llm.provider:"), r.text
    assert (await api.post("/v1/campaigns", headers=auth, json=MOON_KEEP)).status_code == 201
    r = await api.put("/v1/campaigns/moon-keep/npcs/ayla", headers=auth, json={
        "name": "Ayla", "persona": "A keeper.", "llm": {"provider": "fake"}})
    assert r.status_code == 422 and "'fake' is a test double" in r.json()["error"], r.text


async def test_campaign_crud_import_and_export(api, op):
    tenant = unique()
    auth = await new_tenant(api, op, tenant)
    r = await api.post("/v1/campaigns", headers=auth, json=MOON_KEEP)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "moon-keep" and r.json()["npcs"] == ["ayla", "bren"]
    r = await api.post("/v1/campaigns", headers=auth, json=MOON_KEEP)
    assert r.status_code == 409 and "moon-keep" in r.json()["error"]
    r = await api.get("/v1/campaigns/moon-keep", headers=auth)
    assert r.status_code == 200
    assert r.json()["npcs"][1] == {**MOON_KEEP["npcs"][1], "voice": r.json()["npcs"][1]["voice"],
                                   "llm": None, "knowledge": "", "scene": None}
    assert [c["id"] for c in (await api.get("/v1/campaigns", headers=auth)).json()] == ["forge", "moon-keep"]

    replaced = {"name": "Moon Keep", "npcs": [{"name": "Cass", "persona": "A new keeper."}]}
    r = await api.put("/v1/campaigns/moon-keep", headers=auth, json=replaced)
    assert r.status_code == 200 and r.json()["npcs"] == ["cass"]
    # like an NPC's, a campaign's name must become the id it is stored under
    r = await api.put("/v1/campaigns/moon-keep", headers=auth, json={**replaced, "name": "Sun Keep"})
    assert r.status_code == 422 and "'sun-keep'" in r.json()["error"] and "'moon-keep'" in r.json()["error"]
    r = await api.put("/v1/campaigns/new-keep", headers=auth, json={**replaced, "name": "New Keep"})
    assert r.status_code == 200 and r.json()["id"] == "new-keep"
    r = await api.get("/v1/campaigns/moon-keep", headers=auth)
    assert [n["name"] for n in r.json()["npcs"]] == ["Cass"]
    assert (await api.delete("/v1/campaigns/moon-keep", headers=auth)).status_code == 204
    assert (await api.get("/v1/campaigns/moon-keep", headers=auth)).status_code == 404
    assert (await api.delete("/v1/campaigns/moon-keep", headers=auth)).status_code == 404

    # NPC names that collide (both become "greta") are refused, naming the field
    r = await api.post("/v1/campaigns", headers=auth, json={"name": "Twins", "npcs": [
        {"name": "Greta", "persona": "one"}, {"name": "GRETA", "persona": "two"}]})
    assert r.status_code == 422 and "npcs" in r.json()["error"] and "collide" in r.json()["error"]
    r = await api.post("/v1/campaigns", headers=auth, json={"name": "Empty", "npcs": []})
    assert r.status_code == 422 and r.json()["error"].startswith("body.npcs")
    r = await api.post("/v1/campaigns", headers=auth, json={"name": "???", "npcs": MOON_KEEP["npcs"]})
    assert r.status_code == 422 and "name" in r.json()["error"], r.text

    # YAML import: duplicate, replace, and errors that name the field and the line
    r = await import_yaml(api, auth, EXAMPLE_CAMPAIGN)
    assert r.status_code == 409
    r = await import_yaml(api, auth, EXAMPLE_CAMPAIGN.replace("The innkeeper.", "The new innkeeper."),
                          replace=True)
    assert r.status_code == 201 and r.json()["id"] == "forge" and r.json()["npcs"] == ["greta", "tobias"]
    r = await api.get("/v1/campaigns/forge/npcs/tobias", headers=auth)
    assert r.json()["persona"] == "The new innkeeper."
    bad = [
        ("name: Forge\nnpcs:\n  - name: Greta\n    persona: ''\n", "line 4: npcs[0].persona: "),
        ("name: Forge\nnpcs:\n  - name: Greta\n    persona: p\n    colour: red\n",
         "line 5: npcs[0].colour: unknown field"),
        ("name: Forge\nnpcs:\n  - name: Greta\n    persona: p\n  - name: greta\n    persona: q\n",
         "line 5: npcs[1].name: NPC names 'Greta' and 'greta' collide"),
        ("name: Forge\nnpcs: [\n  - name: Greta\n", "line 3: not valid YAML"),
        ("- just\n- a list\n", "line 1: the campaign must be a mapping"),
        ("", "line 1: the campaign must be a mapping"),
    ]
    for text, message in bad:
        r = await import_yaml(api, auth, text, replace=True)
        assert r.status_code == 422 and message in r.json()["error"], (text, r.text)
    r = await import_yaml(api, auth, "name: '!!!'\nnpcs:\n  - name: Greta\n    persona: p\n")
    assert r.status_code == 422 and "name" in r.json()["error"], r.text
    r = await api.get("/v1/campaigns/forge", headers=auth)
    assert [n["persona"] for n in r.json()["npcs"]] == ["A blacksmith who sells swords.", "The new innkeeper."]

    # export -> YAML that re-imports to the same campaign
    r = await import_yaml(api, auth, RICH_CAMPAIGN)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert rid == "emile-s-harbour" and r.json()["npcs"] == ["captain-voss", "li-na"]
    original = (await api.get(f"/v1/campaigns/{rid}", headers=auth)).json()
    assert original["llm"] == {"provider": "gemini", "model": "gemini-2.5-flash-lite",
                               "temperature": None}  # the campaign's default LLM is kept
    assert original["npcs"][1]["llm"]["model"] == "gpt-4o-mini"
    r = await api.get(f"/v1/campaigns/{rid}/export", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    exported = r.text
    assert yaml.safe_load(exported)["name"] == "Émile's Harbour"
    assert (await api.delete(f"/v1/campaigns/{rid}", headers=auth)).status_code == 204
    r = await import_yaml(api, auth, exported)
    assert r.status_code == 201 and r.json()["id"] == rid
    assert (await api.get(f"/v1/campaigns/{rid}", headers=auth)).json() == original
    assert (await api.get(f"/v1/campaigns/{rid}/export", headers=auth)).text == exported


async def test_npc_crud(api, op):
    auth = await new_tenant(api, op, unique())
    npcs = "/v1/campaigns/forge/npcs"
    mira = {"name": "Mira", "aliases": ["the healer"], "persona": "A healer."}
    r = await api.post(npcs, headers=auth, json=mira)
    assert r.status_code == 201 and r.json()["name"] == "Mira" and r.json()["aliases"] == ["the healer"]
    r = await api.post(npcs, headers=auth, json=mira)
    assert r.status_code == 409 and "mira" in r.json()["error"]
    r = await api.post(npcs, headers=auth, json={"name": "greta", "persona": "collides with Greta"})
    assert r.status_code == 409
    r = await api.post(npcs, headers=auth, json={"name": "Mira", "persona": "x", "mood": "grumpy"})
    assert r.status_code == 422 and r.json()["error"].startswith("body.mood")
    r = await api.post(npcs, headers=auth, json={"name": "?!", "persona": "no token from this name"})
    assert r.status_code == 422 and "name" in r.json()["error"], r.text
    assert (await api.post("/v1/campaigns/nope/npcs", headers=auth, json=mira)).status_code == 404
    r = await api.get(npcs, headers=auth)
    assert [n["name"] for n in r.json()] == ["Greta", "Tobias", "Mira"]
    assert (await api.get("/v1/campaigns", headers=auth)).json()[0]["npcs"] == ["greta", "tobias", "mira"]

    r = await api.get(f"{npcs}/mira", headers=auth)
    assert r.status_code == 200 and r.json()["persona"] == "A healer."
    assert (await api.get(f"{npcs}/nobody", headers=auth)).status_code == 404
    r = await api.put(f"{npcs}/mira", headers=auth, json={**mira, "persona": "A tired healer."})
    assert r.status_code == 200 and r.json()["persona"] == "A tired healer."
    assert (await api.get(f"{npcs}/mira", headers=auth)).json()["persona"] == "A tired healer."
    r = await api.put(f"{npcs}/mira", headers=auth, json={"name": "Marta", "persona": "renamed"})
    assert r.status_code == 422 and "'marta'" in r.json()["error"] and "'mira'" in r.json()["error"]
    assert (await api.get(f"{npcs}/mira", headers=auth)).json()["name"] == "Mira"
    r = await api.put(f"{npcs}/nessa", headers=auth, json={"name": "Nessa", "persona": "made by PUT"})
    assert r.status_code == 200
    assert [n["name"] for n in (await api.get(npcs, headers=auth)).json()] == ["Greta", "Tobias", "Mira", "Nessa"]

    # a new NPC goes last, also after a delete
    assert (await api.delete(f"{npcs}/greta", headers=auth)).status_code == 204
    assert (await api.post(npcs, headers=auth, json={"name": "Aaron", "persona": "new"})).status_code == 201
    order = ["Tobias", "Mira", "Nessa", "Aaron"]
    assert [n["name"] for n in (await api.get(npcs, headers=auth)).json()] == order
    r = await api.get("/v1/campaigns/forge", headers=auth)
    assert [n["name"] for n in r.json()["npcs"]] == order
    r = await api.get("/v1/campaigns", headers=auth)
    assert r.json()[0]["npcs"] == [n.lower() for n in order]

    for npc in ("mira", "nessa", "aaron"):
        assert (await api.delete(f"{npcs}/{npc}", headers=auth)).status_code == 204
    assert (await api.get(f"{npcs}/mira", headers=auth)).status_code == 404
    assert (await api.delete(f"{npcs}/mira", headers=auth)).status_code == 404
    r = await api.delete(f"{npcs}/tobias", headers=auth)
    assert r.status_code == 409 and "at least one NPC" in r.json()["error"]
    assert [n["name"] for n in (await api.get(npcs, headers=auth)).json()] == ["Tobias"]


# --- sessions (tenant) ----------------------------------------------------------------------

async def test_session_start_get_list_stop(api, op, pg_dsn):
    tenant = unique()
    auth = await new_tenant(api, op, tenant, tier={"max_concurrent_sessions": 3})
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})
    assert r.status_code == 201, r.text
    session = r.json()
    sid = session["id"]
    assert session["tenant"] == tenant and session["campaign"] == "forge" and session["edge"] == "scene"
    assert session["state"] == "active" and session["started_at"] is not None
    assert [(t["from_state"], t["to_state"]) for t in session["transitions"]] == [
        (None, "pending"), ("pending", "active")]
    assert [h["role"] for h in session["holders"]] == ROLES
    assert all(h["replica"] is None for h in session["holders"])
    [(state, snapshot)] = await db(pg_dsn, "SELECT state::text, campaign FROM sessions WHERE tenant_id = %s"
                                   " AND id = %s", tenant, sid)
    assert state == "active" and [n["name"] for n in snapshot["npcs"]] == ["Greta", "Tobias"]

    r = await api.get(f"/v1/sessions/{sid}", headers=auth)
    assert r.status_code == 200 and r.json()["state"] == "active"
    assert [h["role"] for h in r.json()["holders"]] == ROLES
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge", "session": sid})
    assert r.status_code == 409 and sid in r.json()["error"]
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "nowhere"})
    assert r.status_code == 404 and "nowhere" in r.json()["error"]
    for body, field in [({}, "body.campaign"), ({"campaign": "forge", "edge": "zoom"}, "body.edge"),
                        ({"campaign": "forge", "session": "Bad Id"}, "body.session"),
                        ({"campaign": "forge", "guild_id": "abc"}, "body.guild_id")]:
        r = await api.post("/v1/sessions", headers=auth, json=body)
        assert r.status_code == 422 and r.json()["error"].startswith(field), r.text
    assert (await api.get("/v1/sessions/nope", headers=auth)).status_code == 404

    assert [s["id"] for s in (await api.get("/v1/sessions", headers=auth)).json()] == [sid]
    assert [s["id"] for s in (await api.get("/v1/sessions?state=active", headers=auth)).json()] == [sid]
    assert (await api.get("/v1/sessions?state=ended", headers=auth)).json() == []
    assert (await api.get("/v1/sessions?state=bogus", headers=auth)).status_code == 422
    assert (await api.get(f"/v1/sessions/{sid}/transcript", headers=auth)).json() == []
    assert (await api.get(f"/v1/sessions/{sid}/turns", headers=auth)).json() == []
    assert (await api.get("/v1/sessions/nope/transcript", headers=auth)).status_code == 404
    assert (await api.get("/v1/sessions/nope/turns", headers=auth)).status_code == 404

    r = await api.post(f"/v1/sessions/{sid}/stop", headers=auth, json={"reason": "the table wrapped up"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] in ("ending", "ended")  # the watchdog may finish it at once
    assert ("active", "ending", "the table wrapped up") in [
        (t["from_state"], t["to_state"], t["reason"]) for t in r.json()["transitions"]]
    ended = await wait_state(api, auth, sid, "ended", 15)
    assert ended["ended_at"] is not None and ended["holders"] == []
    assert [(t["from_state"], t["to_state"]) for t in ended["transitions"]] == [
        (None, "pending"), ("pending", "active"), ("active", "ending"), ("ending", "ended")]
    assert ended["transitions"][2]["reason"] == "the table wrapped up"
    r = await api.post(f"/v1/sessions/{sid}/stop", headers=auth)
    assert r.status_code == 200 and r.json()["state"] == "ended"
    assert [s["id"] for s in (await api.get("/v1/sessions?state=ended", headers=auth)).json()] == [sid]
    assert (await api.get("/v1/sessions?state=active", headers=auth)).json() == []
    assert (await api.post("/v1/sessions/nope/stop", headers=auth)).status_code == 404
    [(usage,)] = await db(pg_dsn, "SELECT amount FROM usage_events WHERE tenant_id = %s AND session_id = %s"
                          " AND metric = 'session_seconds'", tenant, sid)
    assert usage >= 0

    audit = (await api.get("/v1/audit", headers=op, params={"tenant_id": tenant})).json()
    assert {"session.start", "session.stop"} <= {e["action"] for e in audit}


async def test_session_timeline_campaign_snapshot_and_replay(api, op, control, pg_dsn):
    """A session's turns on one time axis from what the streams keep, for its own tenant
    only; its campaign snapshot as YAML; a replay session starts with that snapshot even
    after the stored campaign changed, and cannot name another tenant's session."""
    import nats

    from glyphoxa_events import headers as H
    from glyphoxa_events.models import (
        AudioDone,
        Outcome,
        Played,
        RouteKind,
        RoutingExplained,
        Transcript,
        TurnEnded,
        TurnFailure,
        TurnLatency,
        UtteranceEnded,
        UtteranceStarted,
    )
    from glyphoxa_events.subjects import SessionSubjects

    tenant, other = unique(), unique()
    auth = await new_tenant(api, op, tenant, tier={"max_concurrent_sessions": 5})
    other_auth = await new_tenant(api, op, other)
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})
    sid = r.json()["id"]
    t0 = int(datetime.fromisoformat(r.json()["started_at"]).timestamp() * 1e9)
    ms = 1_000_000
    s = SessionSubjects(tenant, sid)
    nc = await nats.connect(control.nats_url)
    try:
        js = nc.jetstream()
        await js.publish(s.vad("alice"), UtteranceStarted(
            utterance_id="alice-1", speaker="alice", start_ns=t0 + 1000 * ms).to_bytes(),
            headers={H.KIND: "start"})
        await js.publish(s.vad("alice"), UtteranceEnded(
            utterance_id="alice-1", speaker="alice", start_ns=t0 + 1000 * ms,
            speech_end_ns=t0 + 2000 * ms, chunks=3, audio_ms=1000,
            vad_end_ns=t0 + 2300 * ms).to_bytes(), headers={H.KIND: "end"})
        await js.publish(s.stt("alice"), Transcript(
            utterance_id="alice-1", speaker="alice", text="Greta, a sword?", final=True,
            start_ns=t0 + 1000 * ms, speech_end_ns=t0 + 2000 * ms,
            stt_final_ns=t0 + 2500 * ms, provider="fake").to_bytes())
        routing = RoutingExplained(kind=RouteKind.name_start, npc="greta", name="Greta",
                                   why="'Greta' at the start of the line")
        await js.publish(s.ctl("turn"), TurnEnded(
            turn_id="alice-1", speaker="alice", transcript="Greta, a sword?", npc="greta",
            outcome=Outcome.answered, reply_text="Aye.", routing=routing,
            latency=TurnLatency(speech_end_ns=t0 + 2000 * ms, vad_end_ns=t0 + 2300 * ms,
                                stt_final_ns=t0 + 2500 * ms, first_token_ns=t0 + 2700 * ms,
                                first_sentence_ns=t0 + 2900 * ms)).to_bytes())
        await js.publish(s.ctl("audio.done"), AudioDone(
            turn_id="alice-1", npc="greta", frames=40, first_audio_ns=t0 + 3100 * ms,
            reason="final").to_bytes())
        await js.publish(s.ctl("played"), Played(
            turn_id="alice-1", npc="greta", text_heard="Aye.", complete=True,
            first_played_ns=t0 + 3200 * ms).to_bytes())
        await js.publish(s.ctl("turn"), TurnEnded(
            turn_id="bob-1", speaker="bob", transcript="Tobias?", npc="tobias",
            outcome=Outcome.failed, reason="llm failed",
            failure=TurnFailure(stage="llm", provider="gemini", error="quota", retryable=False),
            latency=TurnLatency(speech_end_ns=t0 + 5000 * ms)).to_bytes())
    finally:
        await nc.close()

    r = await api.get(f"/v1/sessions/{sid}/timeline", headers=auth)
    assert r.status_code == 200, r.text
    timeline = r.json()
    assert timeline["source"] == "stream" and timeline["session"] == sid
    alice, bob = timeline["turns"]
    # (audio_done is when it was stored: now, not on the made-up clock of the rest)
    assert [m["kind"] for m in alice["marks"] if m["kind"] != "audio_done"] == [
        "speech_start", "speech_end", "vad_end", "stt_final", "routed", "first_token",
        "first_sentence", "first_audio_published", "first_audio_played"]
    assert "audio_done" in {m["kind"] for m in alice["marks"]}
    at = {m["kind"]: m["at_ms"] for m in alice["marks"]}
    # counted from the session's start (its session.started event, a moment after started_at)
    assert at["speech_start"] == round((t0 + 1000 * ms - timeline["origin_ns"]) / 1e6, 1)
    assert at["first_token"] - at["speech_start"] == pytest.approx(1700.0, abs=0.2)
    assert at["first_audio_played"] - at["speech_start"] == pytest.approx(2200.0, abs=0.2)
    assert alice["routing"]["kind"] == "name_start" and alice["npc"] == "greta"
    assert alice["npc_name"] == "Greta"  # as the session's campaign spells it
    assert "'Greta' at the start" in next(m["detail"] for m in alice["marks"] if m["kind"] == "routed")
    assert bob["outcome"] == "failed" and bob["failure"]["provider"] == "gemini"
    assert "quota" in next(m["detail"] for m in bob["marks"] if m["kind"] == "failed")
    assert (await api.get(f"/v1/sessions/{sid}/timeline", headers=other_auth)).status_code == 404
    assert (await api.get("/v1/sessions/nope/timeline", headers=auth)).status_code == 404

    # a session the streams no longer keep: its timeline from the turn table
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})
    dropped = r.json()["id"]
    await db(pg_dsn, "INSERT INTO turns (tenant_id, session_id, turn_id, speaker, npc, outcome,"
             " transcript, latency) VALUES (%s, %s, 'carol-1', 'carol', 'tobias', 'answered',"
             " 'Tobias, ale!', %s)", tenant, dropped,
             Jsonb({"speech_end_ns": t0 + 7000 * ms, "stt_final_ns": t0 + 7400 * ms,
                    "first_token_ns": t0 + 7600 * ms}))
    r = await api.get(f"/v1/sessions/{dropped}/timeline", headers=auth)
    assert r.status_code == 200 and r.json()["source"] == "record", r.text
    [carol] = r.json()["turns"]
    assert [m["kind"] for m in carol["marks"]] == ["speech_end", "stt_final", "first_token"]
    assert carol["npc"] == "tobias" and carol["transcript"] == "Tobias, ale!"
    await api.post(f"/v1/sessions/{dropped}/stop", headers=auth)

    # the snapshot, as YAML; the stored campaign changes, the snapshot does not
    r = await api.get(f"/v1/sessions/{sid}/campaign", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    snapshot = yaml.safe_load(r.text)
    assert [n["name"] for n in snapshot["npcs"]] == ["Greta", "Tobias"]
    assert (await api.get(f"/v1/sessions/{sid}/campaign", headers=other_auth)).status_code == 404
    renamed = EXAMPLE_CAMPAIGN.replace("Greta", "Gerda")
    assert (await import_yaml(api, auth, renamed, replace=True)).status_code == 201
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge", "replay_of": sid})
    assert r.status_code == 201, r.text
    replay = r.json()["id"]
    r = await api.get(f"/v1/sessions/{replay}/campaign", headers=auth)
    assert [n["name"] for n in yaml.safe_load(r.text)["npcs"]] == ["Greta", "Tobias"]
    r = await api.post("/v1/sessions", headers=other_auth, json={"campaign": "forge", "replay_of": sid})
    assert r.status_code == 404 and sid in r.json()["error"]
    await api.post(f"/v1/sessions/{replay}/stop", headers=auth)
    # replayed with a campaign of the GM's for this session only: the stored one is untouched
    tried = {**snapshot, "npcs": [{**n, "name": n["name"].replace("Greta", "Grete")}
                                  for n in snapshot["npcs"]]}
    r = await api.post("/v1/sessions", headers=auth,
                       json={"campaign": "forge", "replay_of": sid, "campaign_snapshot": tried})
    assert r.status_code == 201, r.text
    tried_replay = r.json()["id"]
    r = await api.get(f"/v1/sessions/{tried_replay}/campaign", headers=auth)
    assert [n["name"] for n in yaml.safe_load(r.text)["npcs"]] == ["Grete", "Tobias"]
    stored = (await api.get("/v1/campaigns/forge", headers=auth)).json()
    assert [n["name"] for n in stored["npcs"]] == ["Gerda", "Tobias"]
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge", "campaign_snapshot": tried})
    assert r.status_code == 422 and "replay_of" in r.text
    for session in (sid, tried_replay):
        await api.post(f"/v1/sessions/{session}/stop", headers=auth)


async def test_session_limits_guilds_and_quota(api, op):
    tenant = unique()
    auth = await new_tenant(api, op, tenant, allowed_guild_ids=["111"],
                            tier={"max_concurrent_sessions": 2, "monthly_session_hours": 5})
    discord = {"campaign": "forge", "edge": "discord"}
    for body, status, fragment in [(discord, 422, "guild_id and channel_id"),
                                   ({**discord, "guild_id": "111"}, 422, "guild_id and channel_id"),
                                   ({**discord, "guild_id": "222", "channel_id": "333"}, 403, "222")]:
        r = await api.post("/v1/sessions", headers=auth, json=body)
        assert r.status_code == status and fragment in r.json()["error"], r.text
    assert (await api.get("/v1/sessions", headers=auth)).json() == []

    r = await api.post("/v1/sessions", headers=auth, json={**discord, "guild_id": "111", "channel_id": "333"})
    assert r.status_code == 201 and r.json()["guild_id"] == "111" and r.json()["channel_id"] == "333"
    first = r.json()["id"]
    assert (await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})).status_code == 201
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})
    assert r.status_code == 429 and "2 live session(s)" in r.json()["error"] and "allows 2" in r.json()["error"]
    assert len((await api.get("/v1/sessions?state=active", headers=auth)).json()) == 2

    await api.post(f"/v1/sessions/{first}/stop", headers=auth)
    await wait_state(api, auth, first, "ended", 15)
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})
    assert r.status_code == 201, r.text

    # the operator's usage view of a tenant, this month and a past one
    r = await api.get(f"/v1/tenants/{tenant}/usage", headers=op)
    assert r.status_code == 200 and set(r.json()) == set(Usage.model_fields)
    assert r.json()["tenant"] == tenant and r.json()["month"] == f"{datetime.now(UTC):%Y-%m}"
    assert r.json()["sessions_live"] == 2 and r.json()["monthly_session_hours"] == 5.0
    assert r.json()["session_seconds"] > 0
    for s in (await api.get("/v1/sessions?state=active", headers=auth)).json():
        await api.post(f"/v1/sessions/{s['id']}/stop", headers=auth)

    # a used-up monthly quota
    broke = unique()
    broke_auth = await new_tenant(api, op, broke, tier={"max_concurrent_sessions": 5, "monthly_session_hours": 0})
    r = await api.post("/v1/sessions", headers=broke_auth, json={"campaign": "forge"})
    assert r.status_code == 429 and "0 session hours" in r.json()["error"] and "next month" in r.json()["error"]
    assert (await api.get("/v1/sessions", headers=broke_auth)).json() == []


async def test_usage_reports(api, op):
    tenant = unique()
    auth = await new_tenant(api, op, tenant, tier={"monthly_session_hours": 12.5})
    this_month = f"{datetime.now(UTC):%Y-%m}"
    for r in (await api.get("/v1/usage", headers=auth), await api.get(f"/v1/tenants/{tenant}/usage", headers=op)):
        assert r.status_code == 200 and set(r.json()) == set(Usage.model_fields)
        assert r.json() == {"tenant": tenant, "month": this_month, "session_seconds": 0.0,
                            "stt_audio_seconds": 0.0, "llm_tokens_in": 0, "llm_tokens_out": 0,
                            "tts_characters": 0, "monthly_session_hours": 12.5, "sessions_live": 0}
    r = await api.get("/v1/usage", headers=auth, params={"month": "2020-02"})
    assert r.status_code == 200 and r.json()["month"] == "2020-02" and r.json()["session_seconds"] == 0
    for month in ("2026-13", "2026-00", "26-01", "2026-1", "0000-05", "9999-12"):
        for r in (await api.get("/v1/usage", headers=auth, params={"month": month}),
                  await api.get(f"/v1/tenants/{tenant}/usage", headers=op, params={"month": month})):
            assert r.status_code == 422 and r.json()["error"].startswith("month:"), (month, r.text)
    assert (await api.get(f"/v1/tenants/{unique()}/usage", headers=op)).status_code == 404


# --- bad input --------------------------------------------------------------------------------

async def test_bad_input_is_refused_and_the_service_keeps_serving(api, op):
    auth = await new_tenant(api, op, unique())
    big = {"name": "Big", "npcs": [{"name": "Huge", "persona": "x" * 4000}] * 3}
    r = await api.post("/v1/campaigns", headers=auth, json=big)
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(4):
            yield b"# filler " + b"x" * 4000 + b"\n"
        yield EXAMPLE_CAMPAIGN.replace("Forge", "Chunked").encode()
    r = await api.post("/v1/campaigns/import", content=chunks(),
                       headers={**auth, "Content-Type": "application/yaml"})
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["error"], r.text
    assert [c["id"] for c in (await api.get("/v1/campaigns", headers=auth)).json()] == ["forge"]

    async def json_chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "Chunky", "npcs": ['
        for i in range(3):
            yield b'{"name": "N%d", "persona": "%s"},' % (i, b"x" * 3000)
        yield b'{"name": "Last", "persona": "p"}]}'
    r = await api.post("/v1/campaigns", content=json_chunks(),
                       headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["error"], r.text

    async def small() -> AsyncIterator[bytes]:
        yield EXAMPLE_CAMPAIGN.replace("Forge", "Chunked").encode()
    r = await api.post("/v1/campaigns/import", content=small(),
                       headers={**auth, "Content-Type": "application/yaml"})
    assert r.status_code == 201 and r.json()["id"] == "chunked", r.text

    r = await api.post("/v1/campaigns", content=b'{"name": "x", "npcs": [', headers={
        **auth, "Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge", "colour": "red"})
    assert r.status_code == 422 and r.json()["error"].startswith("body.colour")
    r = await api.post("/v1/campaigns", headers=auth, json={**MOON_KEEP, "colour": "red"})
    assert r.status_code == 422 and r.json()["error"].startswith("body.colour")
    r = await import_yaml(api, auth, "name: Caf\xe9\nnpcs: []\n".encode("latin-1"))
    assert r.status_code == 422 and "UTF-8" in r.json()["error"]
    r = await api.post("/v1/tenants", headers={**op, "Content-Type": "application/json"}, content=b"[1, 2")
    assert r.status_code == 422

    r = await api.get("/v1/me", headers=auth)
    assert r.status_code == 200
    r = await api.post("/v1/sessions", headers=auth, json={"campaign": "forge"})
    assert r.status_code == 201
    await api.post(f"/v1/sessions/{r.json()['id']}/stop", headers=auth)

