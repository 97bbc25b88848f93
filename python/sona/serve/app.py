"""The ASGI app: an OpenAI-compatible endpoint that routes each chat request to a tier.

Per request: authenticate the tenant, read and check the body (size, JSON, fields), embed the last
user turn with a window of context, ask the router for a tier (one engine call, microseconds),
forward to that tier's upstream, and answer with the upstream's response plus the trajectory id
(header ``x-sona-trajectory-id`` and body field ``sona``). Feedback on that id teaches the router.
A failing tier is recorded as reward 0 (source ``error``) and, if the profile allows, the request
falls back to the next tier up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as HttpRoute
from starlette.types import Message, Receive, Scope, Send

from sona.errors import SonaError
from sona.serve.config import CLIENT_SOURCES, GatewayConfig, ProfileConfig
from sona.serve.feedback import Ledger, RouterKey, Trajectory, conversation_key
from sona.serve.http1 import Pool
from sona.serve.http1 import Response as UpstreamResponse
from sona.serve.jsonio import loads, with_field
from sona.serve.metrics import GatewayMetrics
from sona.serve.routing import Embedder, Router, make_embedder, make_router
from sona.serve.tenants import Tenants
from sona.serve.upstreams import StreamStats, Upstream, UpstreamError, Usage

log = logging.getLogger("sona.serve")

HEADER = "x-sona-trajectory-id"
#: Most open connections to one upstream origin.
_CONNECTIONS = 1024
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
_CHAT_PATH = "/v1/chat/completions"
_JSON_TYPE = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before its request body arrived: nothing to answer."""


class JsonBody:
    """A JSON response sent straight over ASGI (the chat hot path builds no Starlette objects)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        self.body, self.headers, self.status = body, headers, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [_JSON_TYPE, (b"content-length", str(len(self.body)).encode())]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


class ApiError(Exception):
    """A request the gateway refuses: becomes an OpenAI-style error body."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", code: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def error_response(status: int, message: str, kind: str, code: str = "") -> JSONResponse:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code or None}}
    return JSONResponse(body, status_code=status)


def query_text(messages: list[dict[str, Any]], window: int, max_chars: int) -> str:
    """The last user turn plus up to ``window`` messages before it, oldest first."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None:
        last = len(messages) - 1
    parts = []
    for m in messages[max(0, last - window) : last + 1]:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(f"{m.get('role')}: {content or ''}")
    text = "\n".join(parts)
    # The last turn matters most: keep its end if the window is too long.
    return text[-max_chars:]


def _check_request(body: Any, max_messages: int) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required and must be a string", code="missing_model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array", code="invalid_messages")
    if len(messages) > max_messages:
        raise ApiError(413, f"at most {max_messages} messages per request", code="too_many")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise ApiError(400, f"messages[{i}] needs a valid 'role'", code="invalid_messages")
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ApiError(400, f"messages[{i}].content must be a string or an array")
    if not isinstance(body.get("stream", False), bool):
        raise ApiError(400, "'stream' must be a boolean")
    return body


class Gateway:
    """State shared by the handlers: config, tiers, routers, ledger, metrics."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        self.config = config
        self.embedder = embedder or make_embedder(
            config.engine.embedder, config.engine.dim, config.engine.seed
        )
        # One keep-alive pool per upstream origin, shared by the tiers served there.
        self.pools: dict[str, Pool] = {}
        self.upstreams: dict[str, Upstream] = {}
        for t in config.tiers:
            parts = urlsplit(t.base_url)
            origin = f"{parts.scheme}://{parts.netloc}"
            if origin not in self.pools:
                self.pools[origin] = Pool(origin, max_connections=_CONNECTIONS)
            self.upstreams[t.name] = Upstream(t, self.pools[origin])
        self.tenants = Tenants(config.tenants)
        self.ledger = Ledger(config.feedback.ttl_s, config.feedback.max_open)
        self.metrics = GatewayMetrics()
        self.metrics.collectors.append(self._collect_engine_stats)
        self.routers: dict[RouterKey, Router] = {}
        self.passthrough: dict[str, str] = {}
        for t in config.tiers:
            self.passthrough.setdefault(t.model, t.name)
        # Shared engines now, so a saved state that does not fit the config stops the start.
        for profile in config.profiles.values():
            self.router(profile, "")
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random(config.engine.seed)

    # -- routers ------------------------------------------------------------------------------
    def router(self, profile: ProfileConfig, tenant: str) -> tuple[RouterKey, Router]:
        """The profile's shared router, or the tenant's own when it has ``adapter = "own"``."""
        key: RouterKey = (profile.name, tenant if tenant in self.tenants.own_adapter else "*")
        r = self.routers.get(key)
        if r is None:
            tiers = [self.config.tier(n) for n in profile.tiers]
            state_dir = self.config.engine.state_dir
            state = None
            if state_dir is not None:
                state = Path(state_dir) / profile.name
                if key[1] != "*":
                    state = state / "tenants" / key[1]
            r = make_router(
                self.embedder.dim,
                profile.tiers,
                [t.route_cost for t in tiers],
                profile.cost_weight,
                self.config.engine.seed,
                state,
            )
            self.routers[key] = r
        return key, r

    def _collect_engine_stats(self) -> None:
        for (profile, tenant), r in self.routers.items():
            name = profile if tenant == "*" else f"{profile}/{tenant}"
            for stat, value in r.stats().items():
                self.metrics.engine.set((name, stat), value)

    # -- learning -----------------------------------------------------------------------------
    def learn(self, t: Trajectory, reward: float, source: str) -> None:
        """Give ``t`` its one reward (the caller checked it is open and in range)."""
        router = self.routers[t.router_key]
        router.feedback(t.engine_id, float(reward), source)
        self.ledger.close(t, source)
        self.metrics.feedback.inc((source,))
        self.metrics.rewards.observe((source,), float(reward))

    def learn_quietly(self, t: Trajectory, reward: float, source: str) -> None:
        """Gateway-made rewards (error, implicit, judge): a refusal is logged, never raised."""
        if t.closed is not None:
            return
        try:
            self.learn(t, reward, source)
        except SonaError as exc:
            log.warning(
                "could not record %s reward for trajectory %d: %s", source, t.gateway_id, exc
            )

    def spawn(self, coro: Any) -> None:
        """Run a background coroutine (the judge) and keep a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop background tasks, routers and the upstream connections."""
        for task in list(self._tasks):
            task.cancel()
        for key, r in self.routers.items():
            try:
                r.close()
            except SonaError as exc:  # one engine failing to save must not stop the others
                log.error("could not save/close the engine of %s: %s", key, exc)
        for pool in self.pools.values():
            await pool.aclose()

    # -- judge --------------------------------------------------------------------------------
    async def judge(self, t: Trajectory, question: str, answer: str) -> None:
        """Ask the judge tier to grade an answer 0–10; learn it (source ``judge``) if still open."""
        tier = self.config.feedback.judge_tier
        assert tier is not None
        prompt = (
            "Grade the answer to the question from 0 (wrong or useless) to 10 (correct and "
            "helpful). Reply with the number only.\n\n"
            f"Question:\n{question}\n\nAnswer:\n{answer}"
        )
        request = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
        try:
            data, _, _ = await self.upstreams[tier].complete(request)
            text = str(data["choices"][0]["message"]["content"])
        except (UpstreamError, KeyError, IndexError, TypeError):
            return
        m = re.search(r"\d+(?:\.\d+)?", text)
        if m is None:
            return
        self.learn_quietly(t, min(10.0, float(m.group())) / 10.0, "judge")


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes before reading them all."""
    return await read_json_asgi(request.scope, request.receive, limit)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def read_json_asgi(scope: Scope, receive: Receive, limit: int) -> Any:
    """The request body as JSON straight from ASGI messages, refusing more than ``limit`` bytes
    before reading them all; :class:`ClientGone` if the client left first."""
    declared = _header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length")
        if int(declared) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", code="body_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        return loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON", code="invalid_json") from None


def create_app(
    config: GatewayConfig,
    *,
    embedder: Embedder | None = None,
) -> GatewayApp:
    """The gateway as an ASGI app (``app.state.gateway`` holds its state)."""
    gw = Gateway(config, embedder=embedder)
    limit = config.server.max_body_bytes

    def tenant_from(authorization: str | None) -> str:
        tenant = gw.tenants.resolve(authorization)
        if tenant is None:
            raise ApiError(
                401, "missing or invalid API key", "authentication_error", "invalid_api_key"
            )
        return tenant

    def tenant_of(request: Request) -> str:
        return tenant_from(request.headers.get("authorization"))

    def refuse(exc: ApiError) -> JSONResponse:
        gw.metrics.rejected.inc((str(exc.status),))
        return error_response(exc.status, exc.message, exc.kind, exc.code)

    async def chat(scope: Scope, receive: Receive) -> Any:
        """The answer to ``POST /v1/chat/completions`` as an ASGI callable."""
        t_start = time.perf_counter()
        try:
            tenant = tenant_from(_header(scope, b"authorization"))
            body = _check_request(
                await read_json_asgi(scope, receive, limit), config.server.max_messages
            )
            model = body["model"]
            if model == "sona" or model.startswith("sona:"):
                pname = model[5:] or "default"
                profile = config.profiles.get(pname)
                if profile is None:
                    raise ApiError(404, f"unknown profile {pname!r}", code="model_not_found")
            elif model in gw.passthrough:
                return await passthrough(body, gw.upstreams[gw.passthrough[model]], t_start)
            else:
                raise ApiError(404, f"the model {model!r} does not exist", code="model_not_found")
        except ApiError as exc:
            return refuse(exc)
        return await routed(body, tenant, profile, t_start)

    async def chat_app(scope: Scope, receive: Receive, send: Send) -> None:
        # Raw ASGI: the hot path skips Starlette's middleware, routing and Request objects.
        try:
            response = await chat(scope, receive)
        except ClientGone:
            return
        except Exception as exc:
            log.exception("internal error on %s", scope.get("path"), exc_info=exc)
            response = error_response(500, "internal error in the gateway", "server_error")
        await response(scope, receive, send)

    async def routed(
        body: dict[str, Any], tenant: str, profile: ProfileConfig, t_start: float
    ) -> Response | JsonBody:
        messages = body["messages"]
        text = query_text(messages, config.engine.context_messages, config.engine.max_query_chars)
        x = gw.embedder.embed(text)
        key, router = gw.router(profile, tenant)
        micro = tenant if tenant in gw.tenants.micro_adapter else None
        route = router.process(x, micro)
        now = time.monotonic()
        window = config.feedback.retry_window_s
        conv = conversation_key(tenant, profile.name, messages) if window > 0 else None
        if conv is not None:
            prev = gw.ledger.previous(conv, window, now)
            if prev is not None:
                gw.learn_quietly(prev, 0.0, "implicit")
        tier_name = profile.tiers[route.tier]
        # Open before the upstream call: a retry sent while this one waits must find it.
        traj = gw.ledger.open(tenant, key, route.trajectory_id, tier_name, conv, now)
        headers = {HEADER: str(traj.gateway_id), "x-sona-tier": tier_name}
        candidates = [tier_name]
        if profile.fallback:
            candidates += list(profile.tiers[route.tier + 1 :])
        last_error: UpstreamError | None = None
        stream = body.get("stream")
        for tier in candidates:
            up = gw.upstreams[tier]
            try:
                if stream:
                    resp = await up.open_stream(body)
                else:
                    data, raw, usage, upstream_s = await up.complete_raw(body)
            except UpstreamError as exc:
                last_error = exc
                gw.metrics.requests.inc((profile.name, tier, "error"))
                if tier == tier_name:
                    gw.learn_quietly(traj, 0.0, "error")
                log.warning("%s", exc.message)
                if not exc.retryable:
                    break
                continue
            status = "ok" if tier == tier_name else "fallback"
            if tier != tier_name:
                headers["x-sona-tier"] = tier
            if stream:
                return stream_response(resp, up, profile, status, headers, body, t_start, traj)
            # Built after the upstream call, not before: under a burst of arrivals every
            # request's upstream send waits for the work done before it on the others.
            sona_info: dict[str, Any] = {
                "trajectory_id": traj.gateway_id,
                "profile": profile.name,
                "tier": tier_name,
                "propensity": route.propensity,
                "predicted": dict(zip(profile.tiers, route.predicted, strict=False)),
            }
            if tier != tier_name:
                sona_info["fallback_tier"] = tier
            finish(up, profile, status, usage, upstream_s, t_start)
            judge = config.feedback.judge_tier
            if judge and status == "ok" and gw._rng.random() < config.feedback.judge_sample:
                try:
                    answer = str(data["choices"][0]["message"]["content"])
                except (KeyError, IndexError, TypeError):
                    answer = ""
                gw.spawn(gw.judge(traj, text, answer))
            return JsonBody(with_field(raw, data, "sona", sona_info), headers)
        assert last_error is not None
        resp_err = error_response(
            last_error.status, last_error.message, last_error.kind, last_error.code
        )
        resp_err.headers.update(headers)
        return resp_err

    def finish(
        up: Upstream,
        profile: ProfileConfig,
        status: str,
        usage: Usage,
        upstream_s: float,
        t_start: float,
    ) -> None:
        total = time.perf_counter() - t_start
        tier = up.tier.name
        m = gw.metrics
        m.requests.inc((profile.name, tier, status))
        m.cost.inc((tier,), up.cost(usage))
        m.tokens.inc((tier, "prompt"), usage.prompt_tokens)
        m.tokens.inc((tier, "completion"), usage.completion_tokens)
        m.latency.observe((tier,), total)
        m.upstream_latency.observe((tier,), upstream_s)
        m.overhead.observe((), max(0.0, total - upstream_s))

    def stream_response(
        resp: UpstreamResponse,
        up: Upstream,
        profile: ProfileConfig,
        status: str,
        headers: dict[str, str],
        body: dict[str, Any],
        t_start: float,
        traj: Trajectory | None = None,
    ) -> StreamingResponse:
        stats = StreamStats()
        t_up = time.perf_counter()

        async def relay() -> AsyncIterator[bytes]:
            # A comment line first: SSE clients skip it, a reader of the raw stream finds the id.
            if HEADER in headers:
                yield f": sona trajectory_id={headers[HEADER]}\n\n".encode()
            try:
                async for chunk in up.relay(resp, stats):
                    yield chunk
            finally:
                usage = stats.usage or Usage(
                    max(1, len(json.dumps(body["messages"])) // 4), max(0, stats.events - 2)
                )
                ok = "error" if stats.error is not None else status
                if stats.error is not None and traj is not None and ok == "error":
                    gw.learn_quietly(traj, 0.0, "error")
                # Time upstream = the whole relay; the gateway's share is what came before.
                finish(up, profile, ok, usage, time.perf_counter() - t_up, t_start)

        return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)

    async def passthrough(
        body: dict[str, Any], up: Upstream, t_start: float
    ) -> Response | JsonBody:
        profile = ProfileConfig(name="passthrough", tiers=(up.tier.name,))
        try:
            if body.get("stream"):
                resp = await up.open_stream(body)
                headers = {"x-sona-tier": up.tier.name}
                return stream_response(resp, up, profile, "ok", headers, body, t_start)
            data, raw, usage, upstream_s = await up.complete_raw(body)
        except UpstreamError as exc:
            gw.metrics.requests.inc((profile.name, up.tier.name, "error"))
            return error_response(exc.status, exc.message, exc.kind, exc.code)
        finish(up, profile, "ok", usage, upstream_s, t_start)
        info = {"trajectory_id": None, "tier": up.tier.name, "routed": False}
        return JsonBody(with_field(raw, data, "sona", info), {"x-sona-tier": up.tier.name})

    async def feedback(request: Request) -> Response:
        try:
            tenant = tenant_of(request)
            body = await read_json(request, min(limit, 64 * 1024))
            if not isinstance(body, dict):
                raise ApiError(400, "request body must be a JSON object")
            tid = body.get("trajectory_id")
            if isinstance(tid, str) and tid.isdigit() and len(tid) < 20:
                tid = int(tid)
            if isinstance(tid, bool) or not isinstance(tid, int):
                raise ApiError(400, "'trajectory_id' is required and must be an integer")
            reward = body.get("reward")
            if isinstance(reward, bool) or not isinstance(reward, int | float):
                raise ApiError(400, "'reward' is required and must be a number in [0, 1]")
            if not 0.0 <= float(reward) <= 1.0:
                raise ApiError(
                    400, f"'reward' must be in [0, 1], got {reward}", code="reward_range"
                )
            source = body.get("source", "explicit")
            if source not in CLIENT_SOURCES:
                raise ApiError(
                    400, f"'source' must be one of {', '.join(CLIENT_SOURCES)}", code="bad_source"
                )
            traj = gw.ledger.get(tid, tenant)
            if traj is None:
                raise ApiError(404, f"unknown trajectory {tid}", code="trajectory_not_found")
            if traj.closed is not None:
                raise ApiError(
                    409,
                    f"trajectory {tid} already has a reward (source {traj.closed})",
                    code="already_rewarded",
                )
            try:
                gw.learn(traj, float(reward), source)
            except SonaError as exc:
                raise ApiError(409, f"trajectory {tid}: {exc}", code="rejected") from None
        except ApiError as exc:
            return refuse(exc)
        return JSONResponse(
            {"object": "sona.feedback", "trajectory_id": tid, "accepted": True, "source": source}
        )

    async def models(request: Request) -> Response:
        try:
            tenant_of(request)
        except ApiError as exc:
            return refuse(exc)
        data = [{"id": "sona", "object": "model", "created": 0, "owned_by": "sona"}]
        data += [
            {"id": f"sona:{p}", "object": "model", "created": 0, "owned_by": "sona"}
            for p in config.profiles
        ]
        data += [
            {"id": m, "object": "model", "created": 0, "owned_by": f"upstream:{t}"}
            for m, t in gw.passthrough.items()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def metrics(request: Request) -> Response:
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "open_trajectories": len(gw.ledger)})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, f"no route {request.url.path}", "invalid_request_error")

    async def bad_method(request: Request, exc: Exception) -> Response:
        return error_response(405, f"method {request.method} not allowed", "invalid_request_error")

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal error in the gateway", "server_error")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gw.aclose()

    app = Starlette(
        routes=[
            HttpRoute(_CHAT_PATH, _AsgiEndpoint(chat_app), methods=["POST"]),
            HttpRoute("/v1/feedback", feedback, methods=["POST"]),
            HttpRoute("/v1/models", models, methods=["GET"]),
            HttpRoute("/metrics", metrics, methods=["GET"]),
            HttpRoute("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: bad_method, Exception: internal},
        lifespan=lifespan,
    )
    app.state.gateway = gw

    return GatewayApp(app, chat_app)


class _AsgiEndpoint:
    """Hands Starlette's router a plain ASGI app (an instance, so it is not wrapped as an
    endpoint taking a ``Request``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class GatewayApp:
    """The gateway's ASGI app: ``POST /v1/chat/completions`` goes straight to its handler, every
    other request (and the lifespan) to the Starlette app. ``state.gateway`` holds the state."""

    def __init__(self, starlette: Starlette, chat: Any) -> None:
        self.starlette, self.chat = starlette, chat
        self.state = starlette.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == _CHAT_PATH and scope["method"] == "POST":
            await self.chat(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)
