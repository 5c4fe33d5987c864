"""A local Gemini API (``generativelanguage.googleapis.com``) on its real wire format, for
the real ``google-genai`` SDK.

``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` with an ``x-goog-api-key``
header and a ``GenerateContentRequest`` JSON body (``contents``, ``systemInstruction``,
``generationConfig``) answers server-sent events, each ``data: {GenerateContentResponse}``
with ``candidates[0].content.parts[].text`` and ``usageMetadata``; the last chunk carries
``finishReason: STOP``. Errors carry Google's JSON body (``{"error": {"code", "message",
"status"}}``): 403 for a missing key, 400 ``API_KEY_INVALID`` for a wrong one, and
whatever status a scripted ``Reply`` asks for. See ``llm_stream`` for scripting.

Embeddings: ``POST /{version}/models/{model}:batchEmbedContents`` (what the SDK's
``embed_content`` sends with an API key; at most 100 ``requests``, each naming the same
model) and ``:embedContent`` (one ``content``) answer ``{"embeddings": [{"values"}]}`` /
``{"embedding": {"values"}}``. A vector is the sum of one fixed pseudo-random direction per
lower-cased word of the text, 3072 dimensions normalised as Gemini's are, then cut to the
request's ``outputDimensionality`` (so no longer of unit length, like Gemini's): the same
text always gets the same vector, and texts sharing words point alike. A scripted
``Reply`` sets the status and ``first_chunk_delay_s`` the latency; models whose name does
not start with ``gemini-embedding`` or ``text-embedding`` are 404.

    python -m tests.support.fakes.gemini --port 0 --chunk-delay 0.05   # prints its URL
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import numpy as np
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
            if method in ("embedContent", "batchEmbedContents"):
                return await _embed(seen, key, method, reply)
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


EMBED_FULL_DIMS = 3072
_WORD = re.compile(r"[a-z0-9']+")


def embedding(text: str, dims: int | None = None) -> list[float]:
    """The fake's vector for ``text``: per-word directions summed, normalised at 3072
    dimensions, cut to ``dims``."""
    total = np.zeros(EMBED_FULL_DIMS)
    for word in _WORD.findall(text.lower()) or [text]:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
        total += np.random.default_rng(seed).standard_normal(EMBED_FULL_DIMS)
    total /= np.linalg.norm(total)
    return [round(float(v), 7) for v in total[:dims or EMBED_FULL_DIMS]]


async def _embed(seen: Request, key: str | None, method: str, reply: Reply) -> web.Response:
    if key is None:
        return _failed(seen, error(403))
    if not seen.key_ok:
        return _failed(seen, error(400, "API key not valid. Please pass a valid API key.",
                                   reason="API_KEY_INVALID"))
    if not seen.model.startswith(("gemini-embedding", "text-embedding")):
        return _failed(seen, error(404, f"models/{seen.model} is not found for API version "
                                        "v1beta, or is not supported for embedContent."))
    requests = seen.body.get("requests") if method == "batchEmbedContents" else [seen.body]
    problem = _embed_problem(seen.model, requests)
    if problem:
        return _failed(seen, error(400, problem))
    if reply.first_chunk_delay_s:
        await asyncio.sleep(reply.first_chunk_delay_s)
    if reply.status != 200:
        return _failed(seen, error(reply.status))
    vectors = [{"values": embedding(_text(r["content"]), r.get("outputDimensionality"))}
               for r in requests]  # type: ignore[union-attr]
    seen.finished = True
    if method == "embedContent":
        return web.json_response({"embedding": vectors[0]})
    return web.json_response({"embeddings": vectors})


def _embed_problem(model: str, requests: Any) -> str | None:
    if not isinstance(requests, list) or not requests:
        return "* BatchEmbedContentsRequest.requests: requests is not specified"
    if len(requests) > 100:
        return "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
    for n, r in enumerate(requests):
        if r.get("model", f"models/{model}") != f"models/{model}":
            return f"* BatchEmbedContentsRequest.requests[{n}].model: model names should match"
        if not isinstance(r.get("content"), dict) or not _text(r["content"]).strip():
            return f"* BatchEmbedContentsRequest.requests[{n}].content: contents is not specified"
    return None


def _failed(seen: Request, response: web.Response) -> web.Response:
    seen.status = response.status
    return response


def main() -> None:
    serve_main(FakeGemini, API_KEY, __doc__ or "")


if __name__ == "__main__":
    main()
