"""The gateway over real HTTP: a stub upstream and the gateway each on uvicorn on 127.0.0.1,
driven with the official ``openai`` client and raw httpx requests."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from serve_kit import (
    ACME_KEY,
    GLOBEX_KEY,
    INITECH_KEY,
    UPSTREAM_KEY,
    make_config,
    running_gateway,
    running_stub,
)
from sona.serve.app import HEADER, query_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: One client for the module: building an httpx client per call costs more than the request.
HTTP = httpx.Client(timeout=10)


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[str, Any]]:
    with running_stub() as s:
        yield s


@pytest.fixture(scope="module")
def gateway(stub: tuple[str, Any]) -> Iterator[tuple[str, Any]]:
    with running_gateway(make_config(stub[0])) as g:
        yield g


def client(url: str, key: str = ACME_KEY, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, **kw)


def ask(url: str, text: str, key: str = ACME_KEY, model: str = "sona") -> httpx.Response:
    return HTTP.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def feedback(url: str, tid: Any, reward: Any, key: str = ACME_KEY, **extra: Any) -> httpx.Response:
    return HTTP.post(
        f"{url}/v1/feedback",
        json={"trajectory_id": tid, "reward": reward, **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def metric(url: str, line_start: str) -> float:
    """The value of the first metrics line that starts with ``line_start`` (0 if absent)."""
    for line in HTTP.get(f"{url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    return err


# -- the happy path ----------------------------------------------------------------------------


def test_chat_completion_routes_and_carries_the_trajectory_id(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    raw = client(url).chat.completions.with_raw_response.create(
        model="sona", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    tid = int(raw.headers[HEADER])
    extra = completion.model_extra or {}
    assert extra["sona"]["trajectory_id"] == tid
    assert extra["sona"]["tier"] in ("small", "large")
    assert raw.headers["x-sona-tier"] == extra["sona"]["tier"]


def test_streaming_passes_the_upstream_events_through(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    with client(url).chat.completions.with_streaming_response.create(
        model="sona",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
    ) as resp:
        assert int(resp.headers[HEADER]) > 0
        parts = [c.choices[0].delta.content or "" for c in resp.parse() if c.choices]
    assert "".join(parts) == "echo: stream me please"
    assert len(parts) >= 4  # word by word, not buffered into one


def test_tier_settings_are_merged_and_keys_sent_only_upstream(
    gateway: tuple[str, Any], stub: tuple[str, Any]
) -> None:
    url, _ = gateway
    _, upstream = stub
    resp = ask(url, "x", model="echo-small")  # passthrough to the small tier
    assert resp.status_code == 200
    assert HEADER not in resp.headers
    assert resp.json()["sona"] == {"trajectory_id": None, "tier": "small", "routed": False}
    assert upstream.requests[-1]["max_tokens"] == 32
    assert upstream.auth_headers[-1] == ""  # the small tier has no key
    assert ask(url, "y", model="echo-large").status_code == 200
    assert upstream.auth_headers[-1] == f"Bearer {UPSTREAM_KEY}"
    assert ACME_KEY not in " ".join(upstream.auth_headers)  # the gateway key stays at the gateway


def test_models_lists_profiles_and_passthrough_models(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    ids = {m.id for m in client(url).models.list()}
    assert {"sona", "sona:default", "sona:fallback", "echo-small", "echo-large"} <= ids


def test_feedback_is_accepted_once(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    tid = int(ask(url, "rate me").headers[HEADER])
    before = metric(url, 'sona_feedback_total{source="explicit"}')
    ok = feedback(url, tid, 0.75)
    assert ok.status_code == 200 and ok.json()["accepted"] is True
    assert metric(url, 'sona_feedback_total{source="explicit"}') == before + 1
    err = assert_openai_error(feedback(url, tid, 1.0), 409)
    assert err["code"] == "already_rewarded"
    assert metric(url, 'sona_feedback_total{source="explicit"}') == before + 1


def test_feedback_changes_the_router(stub: tuple[str, Any]) -> None:
    """The cheap tier is always wrong here: feedback must move traffic to the expensive one."""
    with running_gateway(make_config(stub[0])) as (url, _):
        tiers = []
        for i in range(60):
            resp = ask(url, f"explain topic number {i % 3}")
            info = resp.json()["sona"]
            tiers.append(info["tier"])
            feedback(url, info["trajectory_id"], 1.0 if info["tier"] == "large" else 0.0)
        assert tiers[0] == "small"  # cost-aware start: the cheap tier while nothing is known
        assert tiers[-15:].count("large") >= 12, tiers


# -- upstream failures -------------------------------------------------------------------------


def test_failing_upstream_is_an_openai_error_without_the_key(
    gateway: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = gateway
    before = metric(url, 'sona_feedback_total{source="error"}')
    with caplog.at_level(logging.DEBUG):
        resp = ask(url, "boom", model="sona:failing")
    err = assert_openai_error(resp, 502)
    assert err["type"] == "upstream_error"
    assert UPSTREAM_KEY not in resp.text and "***" in resp.text
    assert all(UPSTREAM_KEY not in r.getMessage() for r in caplog.records)
    # recorded as failed: reward 0 from source `error`; the client cannot rate it again
    assert metric(url, 'sona_feedback_total{source="error"}') == before + 1
    tid = int(resp.headers[HEADER])
    assert assert_openai_error(feedback(url, tid, 1.0), 409)["code"] == "already_rewarded"
    with pytest.raises(openai.InternalServerError):
        client(url).chat.completions.create(
            model="sona:failing", messages=[{"role": "user", "content": "x"}]
        )


def test_timeout_is_a_504(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    t0 = time.monotonic()
    err = assert_openai_error(ask(url, "wait", model="sona:timeout"), 504)
    assert err["code"] == "upstream_timeout"
    assert time.monotonic() - t0 < 5


def test_fallback_to_the_next_tier(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    resp = ask(url, "fall back", model="sona:fallback")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["choices"][0]["message"]["content"] == "echo: fall back"
    assert body["sona"]["tier"] == "broken" and body["sona"]["fallback_tier"] == "small"
    assert (
        metric(url, 'sona_requests_total{profile="fallback",tier="small",status="fallback"}') >= 1
    )


def test_garbage_from_upstream_is_a_502(stub: tuple[str, Any]) -> None:
    cfg = make_config(stub[0])
    tiers = {t.name: t for t in cfg.tiers}
    with running_gateway(cfg) as (url, app):
        up = app.state.gateway.upstreams["small"]
        up.tier = type(tiers["small"])(**{**vars(tiers["small"]), "model": "garbage"})
        err = assert_openai_error(ask(url, "x", model="echo-small"), 502)
        assert err["code"] == "upstream_bad_response"


def test_unreachable_upstream_is_a_502(stub: tuple[str, Any]) -> None:
    cfg = make_config("http://127.0.0.1:9")  # discard port: nothing listens
    with running_gateway(cfg) as (url, _):
        err = assert_openai_error(ask(url, "x"), 502)
        assert err["code"] == "upstream_unreachable"
        assert HTTP.get(f"{url}/healthz").status_code == 200


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_exposition(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    ask(url, "count me")
    text = HTTP.get(f"{url}/metrics").text
    for name in (
        "# TYPE sona_requests_total counter",
        "# TYPE sona_tier_share gauge",
        "# TYPE sona_cost_total counter",
        "# TYPE sona_request_duration_seconds histogram",
        "# TYPE sona_gateway_overhead_seconds histogram",
        "# TYPE sona_reward histogram",
        "sona_engine_stat{",
    ):
        assert name in text, name
    shares = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('sona_tier_share{profile="default"')
    ]
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-9)
    assert metric(url, 'sona_cost_total{tier="small"}') > 0
    assert HTTP.get(f"{url}/healthz").json()["status"] == "ok"


# -- bad input: each a 4xx with an OpenAI-style body, nothing learned, still serving ------------


def _learned(url: str) -> float:
    text = HTTP.get(f"{url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sona_feedback_total{")
    )


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', {}, 400, "missing_model"),
        (b'{"model": "sona"}', {}, 400, "invalid_messages"),
        (b'{"model": "sona", "messages": []}', {}, 400, "invalid_messages"),
        (b'{"model": "sona", "messages": [{"content": "x"}]}', {}, 400, "invalid_messages"),
        (b'{"model": "sona", "messages": [{"role": "user", "content": 5}]}', {}, 400, None),
        (b'{"model": "sona", "messages": [{"role": "user"}], "stream": "yes"}', {}, 400, None),
        (b"[1, 2]", {}, 400, None),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', {}, 404, None),
        (b'{"model": "sona:nope", "messages": [{"role": "user", "content": "x"}]}', {}, 404, None),
        (b'{"model": "sona", "messages": [{"role": "user", "content": "x"}]}',
         {"authorization": "Bearer wrong-key-0123456789"}, 401, "invalid_api_key"),
        (b'{"model": "sona", "messages": [{"role": "user", "content": "x"}]}',
         {"authorization": ""}, 401, "invalid_api_key"),
        (b'{"model": "sona", "messages": [{"role": "user", "content": "x"}]}',
         {"authorization": f"Basic {ACME_KEY}"}, 401, "invalid_api_key"),
    ],
)  # fmt: skip
def test_bad_chat_requests(
    gateway: tuple[str, Any], body: bytes, headers: dict[str, str], status: int, code: str | None
) -> None:
    url, app = gateway
    learned, open_before = _learned(url), len(app.state.gateway.ledger)
    h = {"authorization": f"Bearer {ACME_KEY}", "content-type": "application/json", **headers}
    resp = HTTP.post(f"{url}/v1/chat/completions", content=body, headers=h)
    err = assert_openai_error(resp, status)
    if code is not None:
        assert err["code"] == code
    assert _learned(url) == learned
    assert len(app.state.gateway.ledger) == open_before  # nothing routed, nothing recorded
    assert ask(url, "still serving").status_code == 200


def test_oversize_and_too_many_messages(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    huge = {"model": "sona", "messages": [{"role": "user", "content": "x" * 100_000}]}
    err = assert_openai_error(
        HTTP.post(
            f"{url}/v1/chat/completions", json=huge, headers={"authorization": f"Bearer {ACME_KEY}"}
        ),
        413,
    )
    assert err["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"model": "sona", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}]}'

    resp = HTTP.post(
        f"{url}/v1/chat/completions",
        content=chunks(),
        headers={"authorization": f"Bearer {ACME_KEY}"},
    )
    assert_openai_error(resp, 413)
    many = {"model": "sona", "messages": [{"role": "user", "content": "x"}] * 65}
    assert_openai_error(
        HTTP.post(
            f"{url}/v1/chat/completions", json=many, headers={"authorization": f"Bearer {ACME_KEY}"}
        ),
        413,
    )
    assert ask(url, "still serving").status_code == 200


@pytest.mark.parametrize(
    ("tid", "reward", "extra", "status"),
    [
        (None, 0.5, {}, 400),
        ("abc", 0.5, {}, 400),
        (True, 0.5, {}, 400),
        ("OWN", 1.5, {}, 400),
        ("OWN", -0.1, {}, 400),
        ("OWN", "high", {}, 400),
        ("OWN", None, {}, 400),
        ("OWN", 0.5, {"source": "error"}, 400),
        ("OWN", 0.5, {"source": "telepathy"}, 400),
        (10**12, 0.5, {}, 404),
        (-1, 0.5, {}, 404),
    ],
)
def test_bad_feedback(
    gateway: tuple[str, Any], tid: Any, reward: Any, extra: dict[str, Any], status: int
) -> None:
    url, _ = gateway
    own = int(ask(url, "a question").headers[HEADER])
    learned = _learned(url)
    assert_openai_error(feedback(url, own if tid == "OWN" else tid, reward, **extra), status)
    assert _learned(url) == learned
    assert feedback(url, own, 1.0).status_code == 200  # the trajectory is still open


def test_nan_reward_and_malformed_feedback(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    own = int(ask(url, "nan").headers[HEADER])
    h = {"authorization": f"Bearer {ACME_KEY}"}
    for body in (
        f'{{"trajectory_id": {own}, "reward": NaN}}'.encode(),
        f'{{"trajectory_id": {own}, "reward": Infinity}}'.encode(),
        b"{oops",
        b'"just a string"',
    ):
        assert_openai_error(HTTP.post(f"{url}/v1/feedback", content=body, headers=h), 400)
    assert_openai_error(feedback(url, own, 0.5, key="not-a-key-at-all-0000"), 401)
    assert feedback(url, own, 0.0).status_code == 200


def test_unknown_route_and_method(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    assert_openai_error(HTTP.get(f"{url}/v1/nothing"), 404)
    assert_openai_error(HTTP.get(f"{url}/v1/chat/completions"), 405)


def test_chat_hot_path_survives_internal_errors_and_clients_that_leave(
    stub: tuple[str, Any],
) -> None:
    """The chat route is raw ASGI (no Starlette around it): its own 500 body and disconnects."""
    import socket
    from urllib.parse import urlsplit

    class Boom:
        dim = 256

        def embed(self, text: str) -> Any:
            raise RuntimeError("embedder failed")

    with running_gateway(make_config(stub[0])) as (url, app):
        gw = app.state.gateway
        real = gw.embedder
        gw.embedder = Boom()
        err = assert_openai_error(ask(url, "hello"), 500)
        assert err["type"] == "server_error"
        assert "embedder failed" not in err["message"]  # no internals leak to the client
        gw.embedder = real
        # A client that announces a body and leaves half-way: nothing routed, nothing recorded.
        parts = urlsplit(url)
        open_before = len(gw.ledger)
        with socket.create_connection((parts.hostname, parts.port)) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + ACME_KEY.encode() + b"\r\n"
                b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"model"'
            )
        time.sleep(0.2)
        assert len(gw.ledger) == open_before
        resp = ask(url, "still serving \u00e9\u4e2d")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        assert int(resp.headers["content-length"]) == len(resp.content)
        assert resp.json()["sona"]["trajectory_id"] == int(resp.headers[HEADER])


# -- tenants -----------------------------------------------------------------------------------


def test_a_tenant_cannot_rate_another_tenants_trajectory(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    tid = int(ask(url, "acme's question", key=ACME_KEY).headers[HEADER])
    learned = _learned(url)
    err = assert_openai_error(feedback(url, tid, 0.0, key=GLOBEX_KEY), 404)
    assert err["code"] == "trajectory_not_found"  # indistinguishable from an unknown id
    assert _learned(url) == learned
    assert feedback(url, tid, 1.0, key=ACME_KEY).status_code == 200


def test_own_adapter_tenant_learns_apart(stub: tuple[str, Any]) -> None:
    """initech has its own router: its feedback moves its predictions, not acme's."""
    with running_gateway(make_config(stub[0])) as (url, app):
        q = "the same question for both"
        acme0 = ask(url, q, key=ACME_KEY).json()["sona"]["predicted"]
        for _ in range(20):
            info = ask(url, q, key=INITECH_KEY).json()["sona"]
            feedback(url, info["trajectory_id"], 0.0, key=INITECH_KEY)
        ini = ask(url, q, key=INITECH_KEY).json()["sona"]["predicted"]
        acme1 = ask(url, q, key=ACME_KEY).json()["sona"]["predicted"]
        assert acme1 == acme0
        assert min(ini.values()) < min(acme0.values()) - 0.1
        keys = set(app.state.gateway.routers)
        assert ("default", "initech") in keys and ("default", "acme") not in keys
        assert {k for k in keys if k[1] != "*"} == {("default", "initech")}


def test_micro_adapter_tenant_learns_apart_over_the_shared_router(
    stub: tuple[str, Any],
) -> None:
    """per_tenant_adapters: acme's feedback steps acme's micro-LoRA in the shared engine only."""
    from serve_kit import config_dict
    from sona.serve.config import parse_config

    data = config_dict(stub[0], engine={"dim": 64, "seed": 7, "per_tenant_adapters": True})
    cfg = parse_config(data, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    assert {t.name: t.adapter for t in cfg.tenants} == {
        "acme": "micro",
        "globex": "micro",
        "initech": "own",
    }
    with running_gateway(cfg) as (url, app):
        q = "the same question for both"
        acme0 = ask(url, q, key=ACME_KEY).json()["sona"]
        globex0 = ask(url, q, key=GLOBEX_KEY).json()["sona"]["predicted"]
        tier = acme0["tier"]
        for _ in range(30):
            info = ask(url, q, key=ACME_KEY).json()["sona"]
            assert feedback(url, info["trajectory_id"], 0.0, key=ACME_KEY).status_code == 200
        acme1 = ask(url, q, key=ACME_KEY).json()["sona"]["predicted"]
        globex1 = ask(url, q, key=GLOBEX_KEY).json()["sona"]["predicted"]
        assert globex1 == globex0  # bit-identical: nothing globex reads moved
        assert acme1[tier] < acme0["predicted"][tier] - 0.01
        gw = app.state.gateway
        assert {k for k in gw.routers if k[1] != "*"} == set()  # one shared engine, no copies
        engine = gw.routers[("default", "*")].engine
        assert engine.tenant_count == 2
        _, bt = engine.tenant_adapter("acme")
        assert np.abs(bt).sum() > 0
        assert np.abs(engine.tenant_adapter("globex")[1]).sum() == 0


def test_no_tenants_means_open_access(stub: tuple[str, Any]) -> None:
    from serve_kit import config_dict
    from sona.serve.config import parse_config

    data = config_dict(stub[0])
    del data["tenants"]
    cfg = parse_config(data, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    with running_gateway(cfg) as (url, _):
        resp = HTTP.post(
            f"{url}/v1/chat/completions",
            json={"model": "sona", "messages": [{"role": "user", "content": "open"}]},
        )
        assert resp.status_code == 200


# -- implicit feedback -------------------------------------------------------------------------


def test_retry_scores_the_previous_answer_zero(stub: tuple[str, Any]) -> None:
    cfg = make_config(stub[0], feedback={"retry_window_s": 30.0})
    with running_gateway(cfg) as (url, _):
        first = int(ask(url, "same conversation").headers[HEADER])
        other = int(ask(url, "another conversation").headers[HEADER])
        assert metric(url, 'sona_feedback_total{source="implicit"}') == 0
        ask(url, "same conversation")  # the retry
        assert metric(url, 'sona_feedback_total{source="implicit"}') == 1
        err = assert_openai_error(feedback(url, first, 1.0), 409)
        assert "implicit" in err["message"]
        assert feedback(url, other, 1.0).status_code == 200
        # another tenant asking the same thing is not a retry
        ask(url, "another conversation", key=GLOBEX_KEY)
        assert metric(url, 'sona_feedback_total{source="implicit"}') == 1


def test_retry_detection_is_off_by_default(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    first = int(ask(url, "default retry").headers[HEADER])
    ask(url, "default retry")
    assert feedback(url, first, 1.0).status_code == 200


def test_judge_scores_a_sample(stub: tuple[str, Any]) -> None:
    cfg = make_config(stub[0], feedback={"judge_tier": "judge", "judge_sample": 1.0})
    with running_gateway(cfg) as (url, _):
        tid = int(ask(url, "grade me").headers[HEADER])
        deadline = time.monotonic() + 5
        while metric(url, 'sona_feedback_total{source="judge"}') < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert metric(url, 'sona_reward_sum{source="judge"}') == pytest.approx(0.7)
        assert assert_openai_error(feedback(url, tid, 1.0), 409)["code"] == "already_rewarded"


# -- units -------------------------------------------------------------------------------------


def test_query_text_takes_the_last_user_turn_and_a_window() -> None:
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "text", "text": "three"}]},
        {"role": "assistant", "content": "after"},
    ]
    assert query_text(msgs, 0, 1000) == "user: three"
    assert query_text(msgs, 1, 1000) == "assistant: two\nuser: three"
    assert query_text(msgs, 9, 1000).startswith("system: sys")
    assert query_text(msgs, 9, 5) == "three"


def test_engines_are_saved_at_shutdown_and_restored(stub: tuple[str, Any], tmp_path: Any) -> None:
    from serve_kit import config_dict
    from sona.errors import ConfigError
    from sona.serve.config import parse_config

    data = config_dict(stub[0], engine={"dim": 64, "seed": 7, "state_dir": str(tmp_path)})
    cfg = parse_config(data, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    q = "remember this question"
    with running_gateway(cfg) as (url, _):
        for _ in range(8):
            info = ask(url, q).json()["sona"]
            assert feedback(url, info["trajectory_id"], 0.0).status_code == 200
        learned = ask(url, q).json()["sona"]["predicted"]
    assert (tmp_path / "default" / "sona.json").is_file()
    with running_gateway(cfg) as (url, app):
        assert ask(url, q).json()["sona"]["predicted"] == pytest.approx(learned, abs=1e-6)
        stats = app.state.gateway.routers[("default", "*")].stats()
        assert stats["feedbacks"] >= 8
    data["profiles"]["default"]["tiers"] = ["large", "small"]  # not the saved engine's tiers
    with pytest.raises(ConfigError, match="saved in"):
        from sona.serve.app import create_app

        create_app(parse_config(data, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}))
