"""A local Gemini API (``generativelanguage.googleapis.com``) on its real wire format, for
the real ``google-genai`` SDK.

``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` with an ``x-goog-api-key``
header and a ``GenerateContentRequest`` JSON body (``contents``, ``systemInstruction``,
``generationConfig``) answers server-sent events, each ``data: {GenerateContentResponse}``
with ``candidates[0].content.parts[].text`` and ``usageMetadata``; the last chunk carries
``finishReason: STOP``. Errors carry Google's JSON body (``{"error": {"code", "message",
"status"}}``): 403 for a missing key, 400 ``API_KEY_INVALID`` for a wrong one, and
whatever status a scripted ``Reply`` asks for. See ``llm_stream`` for scripting.

    python -m tests.support.fakes.gemini --port 0 --chunk-delay 0.05   # prints its URL
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support.fakes.llm_stream import (
    FakeLLMServer,
    Reply,
    Request,
    serve_main,
    sse,
)
from tests.support.fakes.server import read_json

API_KEY = "AIzaFakeGeminiKey0123456789abcdefghijkl"
_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
          "established identity). Please use API Key or other form of API consumer identity "
          "to call this API."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
          "https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


class FakeGemini(FakeLLMServer):
    name = "fake-gemini"

    def __init__(self, api_key: str = API_KEY, default: Reply | None = None, port: int = 0):
        super().__init__(api_key, default, port)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{call}", self._call)

    async def _call(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        key = request.headers.get("x-goog-api-key")
        seen = _record(request, await read_json(request), model, key == self.api_key)
        self.requests.append(seen)
        try:
            reply = self.next_reply()
            error = self._refusal(key, seen, method, reply)
            if error is not None:
                seen.status = error.status
                return error
            return await self.stream_events(request, seen, reply, _events(reply, model))
        finally:
            seen.ended.set()

    def _refusal(self, key: str | None, seen: Request, method: str, reply: Reply
                 ) -> web.Response | None:
        if key is None:
            return error(403)
        if not seen.key_ok:
            return error(400, "API key not valid. Please pass a valid API key.",
                         reason="API_KEY_INVALID")
        if method != "streamGenerateContent" or seen.query.get("alt") != "sse":
            return error(404, f"this fake serves only streamGenerateContent?alt=sse, "
                              f"not {method}")
        if not seen.contents:
            return error(400, "* GenerateContentRequest.contents: contents is not specified")
        return None if reply.status == 200 else error(reply.status)


def thinking_budget(seen: Request) -> int | None:
    """The request's thinking budget. Google's JSON parser takes proto field names in either
    spelling, and the SDK sends the inner ones as written (``thinking_budget``)."""
    config = seen.generation.get("thinkingConfig") or {}
    return config.get("thinkingBudget", config.get("thinking_budget"))


def error(status: int, message: str | None = None, reason: str | None = None) -> web.Response:
    """Google's error body for ``status``."""
    code, default = _STATUS.get(status, ("UNKNOWN", "Unknown error."))
    body: dict[str, Any] = {"code": status, "message": message or default, "status": code}
    if reason:
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": reason, "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"}}]
    return web.json_response({"error": body}, status=status)


def _record(request: web.Request, body: dict[str, Any], model: str, key_ok: bool) -> Request:
    system = body.get("systemInstruction")
    return Request(
        path=request.path,
        query=dict(request.query),
        body=body,
        key_ok=key_ok,
        model=model,
        system=_text(system) if isinstance(system, dict) else None,
        contents=[(c.get("role", "user"), _text(c)) for c in body.get("contents", [])],
        generation=body.get("generationConfig", {}),
    )


def _text(content: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in content.get("parts", []))


def _events(reply: Reply, model: str) -> list[bytes]:
    """The reply as ``GenerateContentResponse`` chunks; each repeats the usage so far."""
    pieces = reply.pieces()
    events = []
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        out = reply.completion_tokens if last else None
        usage: dict[str, Any] = {"promptTokenCount": reply.prompt_tokens,
                                 "totalTokenCount": reply.prompt_tokens + (out or 0),
                                 "promptTokensDetails": [{"modality": "TEXT",
                                                          "tokenCount": reply.prompt_tokens}]}
        if out is not None:
            usage["candidatesTokenCount"] = out
        events.append(sse({"candidates": [candidate], "usageMetadata": usage,
                           "modelVersion": model, "responseId": f"fake-{id(reply):x}"}))
    return events


def main() -> None:
    serve_main(FakeGemini, API_KEY, __doc__ or "")


if __name__ == "__main__":
    main()
