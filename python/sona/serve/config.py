"""The gateway's configuration: one TOML file, validated completely at start.

Every error names the offending key (``tiers.large.timeout_s: must be > 0, got -1``) and raises
:class:`sona.ConfigError`, so ``sona serve`` stops before it listens instead of failing on the
first request. Unknown keys are errors too: a typo must not silently fall back to a default.

Upstream API keys are never stored in the file, only the *name* of the environment variable that
holds them; the key itself lives in :class:`TierConfig` under a field that ``repr`` hides.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sona.errors import ConfigError

#: Feedback sources a client may send; ``error`` is reserved for the gateway itself.
CLIENT_SOURCES = ("explicit", "implicit", "judge")


@dataclass(frozen=True)
class TierConfig:
    """One upstream: an OpenAI-compatible chat-completions endpoint and what it costs."""

    name: str
    base_url: str
    model: str
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    timeout_s: float = 60.0
    #: Fields merged into every request sent to this tier (e.g. ``max_tokens``, ``temperature``):
    #: the same server can be two tiers with different settings.
    params: Mapping[str, Any] = field(default_factory=dict)
    api_key_env: str | None = None
    #: The key read from ``api_key_env`` at start. Excluded from ``repr`` so it cannot reach a log.
    api_key: str | None = field(default=None, repr=False)

    @property
    def route_cost(self) -> float:
        """The price the router trades against reward: input + output per 1k tokens."""
        return self.cost_per_1k_input + self.cost_per_1k_output


@dataclass(frozen=True)
class ProfileConfig:
    """A routing profile (model ``sona:<name>``): a subset of tiers and a cost weight."""

    name: str
    tiers: tuple[str, ...]
    cost_weight: float = 0.3
    fallback: bool = True


@dataclass(frozen=True)
class TenantConfig:
    """A tenant: the gateway API keys that authenticate it and how its router adapts."""

    name: str
    api_keys: tuple[str, ...] = field(repr=False, default=())
    #: ``shared``: the tenant routes with the shared engine; ``micro``: the shared engine with the
    #: tenant's own micro-LoRA over its base and router (its feedback steps only that micro-LoRA);
    #: ``own``: its own engine (own router and micro-LoRA). With ``micro`` or ``own`` its feedback
    #: adapts nothing another tenant uses.
    adapter: str = "shared"


@dataclass(frozen=True)
class EngineConfig:
    """How queries are embedded and routed."""

    dim: int = 256
    seed: int = 0
    embedder: str = "hashing"
    #: Messages before the last user turn that are embedded with it.
    context_messages: int = 2
    max_query_chars: int = 8192
    state_dir: str | None = None
    #: Default ``adapter`` of the tenants that set none: ``micro`` when on, else ``shared``.
    per_tenant_adapters: bool = False


@dataclass(frozen=True)
class FeedbackConfig:
    """Implicit feedback, off by default; each reward is tagged with its source."""

    #: A retry of the same conversation within this many seconds scores the previous answer 0
    #: (source ``implicit``). 0 turns it off.
    retry_window_s: float = 0.0
    #: A tier that grades a sample of answers (source ``judge``); empty turns it off.
    judge_tier: str | None = None
    judge_sample: float = 0.0
    #: How long an unanswered trajectory stays open for feedback.
    ttl_s: float = 3600.0
    max_open: int = 100_000


@dataclass(frozen=True)
class ServerConfig:
    """Where the gateway listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1 << 20
    max_messages: int = 512
    log_level: str = "info"


@dataclass(frozen=True)
class GatewayConfig:
    """The whole validated configuration."""

    tiers: tuple[TierConfig, ...]
    profiles: Mapping[str, ProfileConfig]
    tenants: tuple[TenantConfig, ...] = ()
    server: ServerConfig = ServerConfig()
    engine: EngineConfig = EngineConfig()
    feedback: FeedbackConfig = FeedbackConfig()

    def tier(self, name: str) -> TierConfig:
        """The tier called ``name`` (KeyError if none)."""
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)


class _Section:
    """Reads one TOML table, checking types and ranges and rejecting unknown keys."""

    def __init__(self, path: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a table, got {type(data).__name__}")
        self.path = path
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def _fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}.{key}: {message}")

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self._get(key, None)
        if value is None:
            if required:
                raise self._fail(key, "is required")
            return default
        if not isinstance(value, str) or not value:
            raise self._fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def number(
        self, key: str, default: float, *, lo: float, hi: float = math.inf, lo_open: bool = False
    ) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, f"must be a number, got {value!r}")
        value = float(value)
        bad_lo = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or bad_lo or value > hi:
            bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
            upper = f" and <= {hi:g}" if math.isfinite(hi) else ""
            raise self._fail(key, f"must be {bound}{upper}, got {value!r}")
        return value

    def integer(self, key: str, default: int, *, lo: int, hi: int) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self._fail(key, f"must be an integer in [{lo}, {hi}], got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"must be true or false, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._fail(key, "must be a list of non-empty strings")
        return tuple(value)

    def table(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key, {})

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.path}: unknown key(s) {', '.join(unknown)}")


def _tier(name: str, data: Any, env: Mapping[str, str]) -> TierConfig:
    s = _Section(f"tiers.{name}", data)
    base_url = s.string("base_url", required=True)
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"tiers.{name}.base_url: must start with http:// or https://")
    params = s.table("params")
    if not isinstance(params, dict):
        raise ConfigError(f"tiers.{name}.params: must be a table")
    reserved = {"model", "messages", "stream"} & set(params)
    if reserved:
        raise ConfigError(f"tiers.{name}.params: may not set {', '.join(sorted(reserved))}")
    key_env = s.string("api_key_env")
    key = None
    if key_env is not None:
        key = env.get(key_env)
        if not key:
            raise ConfigError(
                f"tiers.{name}.api_key_env: environment variable {key_env} is not set"
            )
        if not key.isprintable() or not key.isascii():
            # It goes into a header line: a CR/LF would inject headers.
            raise ConfigError(
                f"tiers.{name}.api_key_env: {key_env} holds non-printable or non-ASCII characters"
            )
    tier = TierConfig(
        name=name,
        base_url=base_url.rstrip("/"),
        model=s.string("model", required=True),
        cost_per_1k_input=s.number("cost_per_1k_input", 0.0, lo=0.0),
        cost_per_1k_output=s.number("cost_per_1k_output", 0.0, lo=0.0),
        timeout_s=s.number("timeout_s", 60.0, lo=0.0, hi=3600.0, lo_open=True),
        params=dict(params),
        api_key_env=key_env,
        api_key=key,
    )
    s.done()
    return tier


def _tenant(
    name: str, data: Any, env: Mapping[str, str], default_adapter: str = "shared"
) -> TenantConfig:
    s = _Section(f"tenants.{name}", data)
    keys = list(s.strings("api_keys"))
    keys_env = s.string("api_keys_env")
    if keys_env is not None:
        raw = env.get(keys_env)
        if not raw:
            raise ConfigError(
                f"tenants.{name}.api_keys_env: environment variable {keys_env} is not set"
            )
        keys += [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"tenants.{name}: needs api_keys or api_keys_env")
    if any(len(k) < 16 for k in keys):
        raise ConfigError(f"tenants.{name}: every API key must be at least 16 characters")
    adapter = s.string("adapter", default_adapter)
    if adapter not in ("shared", "micro", "own"):
        raise ConfigError(
            f"tenants.{name}.adapter: must be 'shared', 'micro' or 'own', got {adapter!r}"
        )
    s.done()
    return TenantConfig(name=name, api_keys=tuple(keys), adapter=adapter)


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed TOML document (``env`` supplies the API-key variables)."""
    env = os.environ if env is None else env
    root = _Section("config", dict(data))

    tiers_raw = root.table("tiers")
    if not isinstance(tiers_raw, dict) or not tiers_raw:
        raise ConfigError("tiers: at least one [tiers.<name>] table is required")
    tiers = tuple(_tier(name, t, env) for name, t in tiers_raw.items())
    names = [t.name for t in tiers]

    s = _Section("server", root.table("server"))
    log_level = s.string("log_level", "info")
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise ConfigError(f"server.log_level: unknown level {log_level!r}")
    server = ServerConfig(
        host=s.string("host", "127.0.0.1"),
        port=s.integer("port", 8080, lo=0, hi=65535),
        max_body_bytes=s.integer("max_body_bytes", 1 << 20, lo=256, hi=1 << 30),
        max_messages=s.integer("max_messages", 512, lo=1, hi=100_000),
        log_level=log_level,
    )
    s.done()

    s = _Section("engine", root.table("engine"))
    embedder = s.string("embedder", "hashing")
    if embedder != "hashing" and not embedder.startswith(("sentence-transformers:", "onnx:")):
        raise ConfigError(
            "engine.embedder: must be 'hashing', 'sentence-transformers:<model>' or "
            f"'onnx:<path>', got {embedder!r}"
        )
    engine = EngineConfig(
        dim=s.integer("dim", 256, lo=8, hi=8192),
        seed=s.integer("seed", 0, lo=0, hi=2**63 - 1),
        embedder=embedder,
        context_messages=s.integer("context_messages", 2, lo=0, hi=1000),
        max_query_chars=s.integer("max_query_chars", 8192, lo=16, hi=1 << 24),
        state_dir=s.string("state_dir"),
        per_tenant_adapters=s.boolean("per_tenant_adapters", False),
    )
    s.done()

    s = _Section("feedback", root.table("feedback"))
    judge = s.string("judge_tier")
    if judge is not None and judge not in names:
        raise ConfigError(f"feedback.judge_tier: unknown tier {judge!r} (tiers: {names})")
    feedback = FeedbackConfig(
        retry_window_s=s.number("retry_window_s", 0.0, lo=0.0, hi=86400.0),
        judge_tier=judge,
        judge_sample=s.number("judge_sample", 0.0 if judge is None else 0.1, lo=0.0, hi=1.0),
        ttl_s=s.number("ttl_s", 3600.0, lo=0.0, hi=30 * 86400.0, lo_open=True),
        max_open=s.integer("max_open", 100_000, lo=1, hi=100_000_000),
    )
    s.done()

    profiles_raw = root.table("profiles")
    if not isinstance(profiles_raw, dict):
        raise ConfigError("profiles: must be a table of [profiles.<name>] tables")
    profiles: dict[str, ProfileConfig] = {}
    for pname, pdata in {"default": {}, **profiles_raw}.items():
        s = _Section(f"profiles.{pname}", pdata)
        ptiers = s.strings("tiers") or tuple(names)
        unknown = [t for t in ptiers if t not in names]
        if unknown:
            raise ConfigError(f"profiles.{pname}.tiers: unknown tier(s) {unknown} (tiers: {names})")
        if len(set(ptiers)) != len(ptiers):
            raise ConfigError(f"profiles.{pname}.tiers: a tier is listed twice")
        profiles[pname] = ProfileConfig(
            name=pname,
            tiers=ptiers,
            cost_weight=s.number("cost_weight", 0.3, lo=0.0, hi=1e6),
            fallback=s.boolean("fallback", True),
        )
        s.done()

    tenants_raw = root.table("tenants")
    if not isinstance(tenants_raw, dict):
        raise ConfigError("tenants: must be a table of [tenants.<name>] tables")
    default_adapter = "micro" if engine.per_tenant_adapters else "shared"
    tenants = tuple(_tenant(name, t, env, default_adapter) for name, t in tenants_raw.items())
    seen: set[str] = set()
    for tenant in tenants:
        if seen & set(tenant.api_keys):
            raise ConfigError(f"tenants.{tenant.name}: an API key is shared with another tenant")
        seen |= set(tenant.api_keys)
    root.done()
    return GatewayConfig(
        tiers=tiers,
        profiles=profiles,
        tenants=tenants,
        server=server,
        engine=engine,
        feedback=feedback,
    )


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    if len(raw) > 1 << 20:
        raise ConfigError(f"config {p} is larger than 1 MiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config {p} is not valid TOML: {exc}") from None
    return parse_config(data, env)
