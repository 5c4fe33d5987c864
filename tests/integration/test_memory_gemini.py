"""The Gemini embedder through the real google-genai SDK against the local fake Gemini API
(tests/support/fakes/gemini.py): what the SDK sends (batchEmbedContents, 384 dimensions,
the task type), vectors cut and normalised, batches of at most 100 in order, errors mapped
to EmbedError with the right retryable flag, and the API key in no message or log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import numpy as np
import pytest

from glyphoxa_memory import Embedder, EmbedError, MemorySettings, make_embedder
from glyphoxa_memory.gemini import GeminiEmbedder
from tests.support.fakes import gemini
from tests.support.fakes.llm_stream import Reply

pytestmark = pytest.mark.integration

LINES = [
    "Greta, how much for the longsword?",
    "How much does Greta want for the longsword?",
    "The innkeeper says the well is poisoned.",
]


@pytest.fixture
async def fake() -> AsyncIterator[gemini.FakeGemini]:
    async with gemini.FakeGemini() as server:
        yield server


@pytest.fixture
async def make(fake: gemini.FakeGemini) -> AsyncIterator[Callable[..., GeminiEmbedder]]:
    made: list[GeminiEmbedder] = []

    def build(key: str = gemini.API_KEY, **kwargs: object) -> GeminiEmbedder:
        made.append(GeminiEmbedder(api_key=key, base_url=fake.url, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield build
    for embedder in made:
        await embedder.close()


def expected(text: str) -> np.ndarray:
    vector = np.asarray(gemini.embedding(text, 384), dtype=np.float32)
    return vector / np.linalg.norm(vector)


def messages_of(exc: BaseException | None) -> str:
    text = ""
    while exc is not None:
        text += f"{exc!s} {exc!r} "
        exc = exc.__cause__ or exc.__context__
    return text


async def test_make_embedder_reaches_gemini_through_the_sdk(fake: gemini.FakeGemini) -> None:
    settings = MemorySettings(embedder="gemini", gemini_api_key=gemini.API_KEY,
                              gemini_base_url=fake.url)
    embedder = make_embedder(settings)
    assert isinstance(embedder, Embedder) and isinstance(embedder, GeminiEmbedder)
    try:
        assert (embedder.name, embedder.dims) == ("gemini:gemini-embedding-001", 384)
        vectors = await embedder.embed(LINES)
    finally:
        await embedder.close()
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    # the fake's 384 dimensions are a cut of unit vectors (shorter than 1): normalised here
    assert np.linalg.norm(gemini.embedding(LINES[0], 384)) < 0.9
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, vector in zip(LINES, vectors):
        np.testing.assert_allclose(vector, expected(text), atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2

    (seen,) = fake.requests
    assert seen.path.endswith("/models/gemini-embedding-001:batchEmbedContents")
    assert seen.key_ok and seen.status == 200
    requests = seen.body["requests"]
    assert [r["content"]["parts"][0]["text"] for r in requests] == LINES
    for r in requests:
        assert r["model"] == "models/gemini-embedding-001"
        assert r["outputDimensionality"] == 384
        assert r["taskType"] == "SEMANTIC_SIMILARITY"


async def test_many_texts_go_in_batches_of_100_in_order(fake, make) -> None:
    texts = [f"memory number {n} of the dragon hunt" for n in range(250)]
    vectors = await make().embed(texts)
    assert vectors.shape == (250, 384)
    assert [len(r.body["requests"]) for r in fake.requests] == [100, 100, 50]
    for n in (0, 99, 100, 199, 249):
        np.testing.assert_allclose(vectors[n], expected(texts[n]), atol=1e-5)
    assert (await make().embed([])).shape == (0, 384)
    assert len(fake.requests) == 3  # nothing to embed: no call


async def test_another_model_is_named_in_the_vectors_it_makes(fake, make) -> None:
    embedder = make(model="text-embedding-004")
    assert embedder.name == "gemini:text-embedding-004"
    await embedder.embed(["hello"])
    assert fake.requests[-1].path.endswith("/models/text-embedding-004:batchEmbedContents")


@pytest.mark.parametrize(("status", "retryable"), [
    (429, True), (500, True), (503, True), (400, False), (403, False)])
async def test_vendor_errors_become_embed_errors(fake, make, status: int,
                                                 retryable: bool) -> None:
    fake.script(Reply(status=status))
    with pytest.raises(EmbedError) as caught:
        await make().embed(["hello"])
    assert caught.value.provider == "gemini"
    assert caught.value.retryable is retryable
    assert f"HTTP {status}" in str(caught.value)
    assert fake.requests[-1].status == status
    # the same embedder works once the vendor does again
    assert (await make().embed(["hello"])).shape == (1, 384)


async def test_an_unknown_model_is_a_permanent_error(make) -> None:
    with pytest.raises(EmbedError, match="HTTP 404: unknown model") as caught:
        await make(model="gemini-2.5-flash").embed(["hello"])
    assert not caught.value.retryable


async def test_a_wrong_key_is_refused_clearly_without_showing_it(fake, make, caplog) -> None:
    wrong = "AIzaWrongKeyThatMustNeverBeShown0123456789"
    caplog.set_level(logging.DEBUG)
    embedder = make(key=wrong)
    assert wrong not in repr(embedder)
    with pytest.raises(EmbedError, match="API key not valid") as caught:
        await embedder.embed(["hello"])
    assert not caught.value.retryable
    assert wrong not in messages_of(caught.value) and wrong not in caplog.text
    assert not fake.requests[-1].key_ok


async def test_the_key_never_reaches_a_log_line(fake, make, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    embedder = make()
    await embedder.embed(LINES)
    fake.script(Reply(status=503))
    with pytest.raises(EmbedError):
        await embedder.embed(LINES)
    assert caplog.records  # the SDK and aiohttp did log at debug level
    assert gemini.API_KEY not in caplog.text


async def test_a_slow_answer_times_out_retryably(fake, make) -> None:
    fake.script(Reply(first_chunk_delay_s=3.0))
    with pytest.raises(EmbedError, match="no answer within 1.0 s") as caught:
        await make(timeout_s=1.0).embed(["hello"])
    assert caught.value.retryable


async def test_a_server_that_is_gone_is_a_retryable_connection_error(fake, make) -> None:
    embedder = make()
    await fake.stop()
    with pytest.raises(EmbedError, match="connection failed") as caught:
        await embedder.embed(["hello"])
    assert caught.value.retryable and gemini.API_KEY not in messages_of(caught.value)


async def test_a_closed_embedder_says_so(make) -> None:
    embedder = make()
    await embedder.close()
    with pytest.raises(EmbedError, match="closed"):
        await embedder.embed(["hello"])


async def test_the_fake_answers_embed_content_and_checks_batches(fake) -> None:
    headers = {"x-goog-api-key": gemini.API_KEY}
    base = f"{fake.url}/v1beta/models/gemini-embedding-001"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}:embedContent", json={
                "content": {"parts": [{"text": "hello there"}]},
                "outputDimensionality": 8}) as response:
            assert response.status == 200
            body = await response.json()
        assert body["embedding"]["values"] == gemini.embedding("hello there", 8)
        too_many = [{"model": "models/gemini-embedding-001",
                     "content": {"parts": [{"text": f"t{n}"}]}} for n in range(101)]
        async with http.post(f"{base}:batchEmbedContents",
                             json={"requests": too_many}) as response:
            assert response.status == 400
            assert "at most 100" in (await response.json())["error"]["message"]
        mixed = [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "x"}]}}]
        async with http.post(f"{base}:batchEmbedContents", json={"requests": mixed}) as response:
            assert response.status == 400
    full = gemini.embedding("hello there")
    assert len(full) == 3072 and abs(np.linalg.norm(full) - 1.0) < 1e-5
