"""Every kind of /v1 endpoint passes through: JSON, multipart, binary, unknown paths."""

from __future__ import annotations

import httpx
import orjson

from .fake_upstream import SPEECH_BYTES
from .fixtures_gateway import Stack


def test_models_lists_what_the_key_may_use(fresh: Stack) -> None:
    ids = sorted(m.id for m in fresh.client().models.list())
    assert ids == ["alias-model", "gpt-test", "other-model", "shared-model"]
    assert fresh.client().models.retrieve("gpt-test").id == "gpt-test"


def test_completions_and_embeddings(fresh: Stack) -> None:
    text = fresh.client().completions.create(model="gpt-test", prompt="The future is")
    assert text.choices[0].text == "Hello from upstream"
    emb = fresh.client().embeddings.create(model="gpt-test", input="hello")
    assert emb.data[0].embedding == [0.1, 0.2, 0.3]
    assert fresh.last_row()["prompt_tokens"] == 4


def test_alias_is_renamed_for_the_upstream(fresh: Stack) -> None:
    reply = fresh.client().chat.completions.create(
        model="alias-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "gpt-test"
    assert orjson.loads(fresh.a.seen[-1].body)["model"] == "gpt-test"
    row = fresh.last_row()
    assert (row["model"], row["upstream_model"]) == ("alias-model", "gpt-test")


def test_multipart_transcription_routes_by_form_model(fresh: Stack) -> None:
    audio = b"RIFF" + bytes(5000)
    result = fresh.client().audio.transcriptions.create(
        model="alias-model", file=("voice.wav", audio, "audio/wav")
    )
    # The alias was renamed inside the multipart body and the file arrived whole.
    assert result.text == f"gpt-test:{len(audio)}"


def test_binary_speech_response_is_byte_exact(fresh: Stack) -> None:
    speech = fresh.client().audio.speech.create(model="gpt-test", voice="alloy", input="hello")
    assert speech.content == SPEECH_BYTES


def test_requests_without_model_go_to_modelless_upstream(fresh: Stack) -> None:
    content = fresh.client().files.content("file-123")
    assert content.content == SPEECH_BYTES
    assert fresh.a.seen[-1].path == "/v1/files/file-123/content"


def test_unknown_paths_pass_through_with_method_and_query(fresh: Stack) -> None:
    with httpx.Client(headers={"x-api-key": fresh.key}) as http:
        got = http.get(fresh.url + "/v1/vector_stores?limit=2&order=desc").json()
        assert got["path"] == "/v1/vector_stores" and got["query"] == "limit=2&order=desc"
        deleted = http.delete(fresh.url + "/v1/files/file-9").json()
        assert (deleted["method"], deleted["path"]) == ("DELETE", "/v1/files/file-9")
        posted = http.post(
            fresh.url + "/v1/responses", json={"model": "other-model", "input": "x"}
        ).json()
        assert posted["upstream"] == "b"
        # The body arrived byte for byte.
        assert orjson.loads(posted["body"]) == {"model": "other-model", "input": "x"}


def test_headers_are_cleaned_both_ways(fresh: Stack) -> None:
    with httpx.Client() as http:
        resp = http.post(
            fresh.url + "/v1/chat/completions",
            headers={
                "Authorization": f"Bearer {fresh.key}",
                "Cookie": "session=abc",
                "OpenAI-Beta": "assistants=v2",
            },
            json={"model": "gpt-test", "messages": []},
        )
    assert resp.status_code == 200
    assert len(resp.headers["x-request-id"]) == 32
    seen = fresh.a.seen[-1].headers
    assert seen["OpenAI-Beta"] == "assistants=v2"
    assert "Cookie" not in seen
    assert seen["Authorization"] == f"Bearer {fresh.a.api_key}"
    assert fresh.a.api_key not in str(resp.headers) + resp.text
    assert resp.headers["content-length"] == str(len(resp.content))
