"""A client of session-control's admin HTTP API (used by the scene player, ``glyphoxa up``
and the tests)."""

from __future__ import annotations

from typing import Any

import httpx


class AdminError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class AdminClient:
    def __init__(self, base_url: str, key: str, timeout_s: float = 15.0):
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s,
                                       headers={"Authorization": f"Bearer {key}"})

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    def with_key(self, key: str) -> AdminClient:
        return AdminClient(str(self._http.base_url), key, self._http.timeout.read or 15.0)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise AdminError(response.status_code, message)
        if response.status_code == 204:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # operator

    async def ensure_tenant(self, tenant: str, name: str, **body: Any) -> dict:
        try:
            return await self.call("POST", "/v1/tenants", json={"id": tenant, "name": name, **body})
        except AdminError as exc:
            if exc.status != 409:
                raise
            return await self.call("GET", f"/v1/tenants/{tenant}")

    async def create_api_key(self, tenant: str, label: str = "") -> str:
        return (await self.call("POST", f"/v1/tenants/{tenant}/api-keys", json={"label": label}))["key"]

    # tenant

    async def import_campaign(self, yaml_text: str, replace: bool = True) -> dict:
        return await self.call("POST", "/v1/campaigns/import", params={"replace": str(replace).lower()},
                               content=yaml_text.encode(), headers={"Content-Type": "application/yaml"})

    async def start_session(self, campaign: str, edge: str = "scene", **body: Any) -> dict:
        return await self.call("POST", "/v1/sessions", json={"campaign": campaign, "edge": edge, **body})

    async def stop_session(self, session: str, reason: str = "stopped by the game master") -> dict:
        return await self.call("POST", f"/v1/sessions/{session}/stop", json={"reason": reason})

    async def session(self, session: str) -> dict:
        return await self.call("GET", f"/v1/sessions/{session}")

    async def transcript(self, session: str) -> list[dict]:
        return await self.call("GET", f"/v1/sessions/{session}/transcript")

    async def turns(self, session: str) -> list[dict]:
        return await self.call("GET", f"/v1/sessions/{session}/turns")

    async def sessions(self, limit: int = 100) -> list[dict]:
        return await self.call("GET", "/v1/sessions", params={"limit": limit})

    async def timeline(self, session: str) -> dict:
        return await self.call("GET", f"/v1/sessions/{session}/timeline")

    async def session_campaign(self, session: str) -> str:
        """The campaign snapshot the session started with, as campaign.yaml text."""
        return await self.call("GET", f"/v1/sessions/{session}/campaign")

    async def usage(self, month: str | None = None) -> dict:
        return await self.call("GET", "/v1/usage", params={"month": month} if month else None)


class SceneSessions:
    """The scene player's door: import the campaign, start a scene session, stop it and wait
    until session-control has ended it (so its transcript and usage are complete)."""

    def __init__(self, client: AdminClient, tenant: str, campaign_yaml: str, end_timeout_s: float = 30.0):
        self.client, self.tenant, self._yaml = client, tenant, campaign_yaml
        self._end_timeout_s = end_timeout_s
        self.campaign_id = ""

    async def start(self) -> str:
        self.campaign_id = (await self.client.import_campaign(self._yaml, replace=True))["id"]
        return (await self.client.start_session(self.campaign_id, edge="scene"))["id"]

    async def stop(self, session: str, reason: str) -> None:
        import asyncio
        import time

        state = (await self.client.stop_session(session, reason))["state"]
        deadline = time.monotonic() + self._end_timeout_s
        while state != "ended" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            state = (await self.client.session(session))["state"]


async def tenant_client(api_url: str, operator_key: str, tenant: str, known_key: str | None = None
                        ) -> tuple[AdminClient, str]:
    """A client with an API key of ``tenant`` (created, with its key, if need be)."""
    if known_key:
        client = AdminClient(api_url, known_key)
        try:
            await client.call("GET", "/v1/me")
            return client, known_key
        except AdminError as exc:
            await client.close()
            if exc.status != 401:
                raise
    async with AdminClient(api_url, operator_key) as operator:
        await operator.ensure_tenant(tenant, f"Table {tenant}", tier={
            "max_concurrent_sessions": 4, "monthly_session_hours": 100})
        key = await operator.create_api_key(tenant, "glyphoxa scene play")
    return AdminClient(api_url, key), key
