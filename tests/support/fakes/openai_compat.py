"""A local OpenAI-compatible chat completions server on the real wire format, for the real
``openai`` SDK (what OpenAI, Groq, vLLM, Ollama and llama.cpp's server all speak).

``POST /v1/chat/completions`` with ``Authorization: Bearer <key>`` and ``stream: true``
answers server-sent events: ``data: {chat.completion.chunk}`` lines (the role first, then
``delta.content`` pieces, then ``finish_reason: stop``), with ``stream_options.include_usage``
a last chunk with empty ``choices`` and the ``usage``, then ``data: [DONE]``. Errors carry
OpenAI's JSON body (``{"error": {"message", "type", "param", "code"}}``): 401
``invalid_api_key`` for a missing or wrong key (the message shows the key masked, as OpenAI
does), and whatever status a scripted ``Reply`` asks for. See ``llm_stream`` for scripting.
``api_key=None`` accepts any key (a local server).

    python -m tests.support.fakes.openai_compat --port 0   # prints its base URL (…/v1)
"""

from __future__ import annotations

import time
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

API_KEY = "sk-fake0openai0key0123456789abcdefghijklmnop"
_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not "
          "have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try "
          "again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. "
          "Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_SAMPLING = ("max_tokens", "max_completion_tokens", "temperature", "seed", "stream",
             "stream_options", "top_p")


class FakeOpenAI(FakeLLMServer):
    name = "fake-openai"

    def __init__(self, api_key: str | None = API_KEY, default: Reply | None = None,
                 port: int = 0):
        super().__init__(api_key or "", default, port)

    @property
    def url(self) -> str:
        """The base URL a client is given (the SDK appends ``/chat/completions``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        body = await read_json(request)
        seen = _record(request, body, not self.api_key or key == self.api_key)
        self.requests.append(seen)
        try:
            reply = self.next_reply()
            refusal = self._refusal(key, seen, reply)
            if refusal is not None:
                seen.status = refusal.status
                return refusal
            events = _events(reply, seen.model, bool(body.get("stream_options",
                                                               {}).get("include_usage")))
            return await self.stream_events(request, seen, reply, events)
        finally:
            seen.ended.set()

    def _refusal(self, key: str | None, seen: Request, reply: Reply) -> web.Response | None:
        if not seen.key_ok:
            shown = f"{key[:3]}{'*' * 8}{key[-4:]}" if key and len(key) > 8 else "***"
            message = ("You didn't provide an API key." if key is None
                       else f"Incorrect API key provided: {shown}. You can find your API key "
                            "at https://platform.openai.com/account/api-keys.")
            return error(401, message)
        if seen.body.get("stream") is not True:
            return error(400, "this fake serves only streamed chat completions")
        if not seen.contents:
            return error(400, "[] is too short - 'messages'")
        return None if reply.status == 200 else error(reply.status)


def error(status: int, message: str | None = None) -> web.Response:
    """OpenAI's error body for ``status``."""
    kind, code, default = _ERRORS.get(status, ("api_error", None, "Request failed."))
    return web.json_response(
        {"error": {"message": message or default, "type": kind, "param": None, "code": code}},
        status=status,
    )


def _record(request: web.Request, body: dict[str, Any], key_ok: bool) -> Request:
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    system = [str(m.get("content", "")) for m in messages if m.get("role") == "system"]
    return Request(
        path=request.path,
        query=dict(request.query),
        body=body,
        key_ok=key_ok,
        model=str(body.get("model", "")),
        system="\n".join(system) if system else None,
        contents=[(str(m.get("role")), str(m.get("content", ""))) for m in messages
                  if m.get("role") != "system"],
        generation={k: body[k] for k in _SAMPLING if k in body},
    )


def _events(reply: Reply, model: str, include_usage: bool) -> list[bytes]:
    """The reply as ``chat.completion.chunk`` events, the usage chunk, ``[DONE]``."""
    created = int(time.time())
    head = {"id": f"chatcmpl-fake{id(reply):x}", "object": "chat.completion.chunk",
            "created": created, "model": model, "system_fingerprint": "fp_fake"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**head, "choices": [choice], **({"usage": None} if include_usage else {})})

    pieces = reply.pieces()
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, "stop"))
    if include_usage:
        usage = {"prompt_tokens": reply.prompt_tokens,
                 "completion_tokens": reply.completion_tokens,
                 "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": 0}}
        events.append(sse({**head, "choices": [], "usage": usage}))
    events.append(sse("[DONE]"))
    return events


def main() -> None:
    serve_main(FakeOpenAI, API_KEY, __doc__ or "")


if __name__ == "__main__":
    main()
