"""Shared pieces of the gateway tests: a stub upstream on a real port and gateway configs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sona.serve.app import create_app
from sona.serve.config import GatewayConfig, parse_config
from sona.serve.testing import StubUpstream, run_app

UPSTREAM_KEY = "sk-upstream-SECRET-0123456789abcdef"
ACME_KEY = "gw-acme-0123456789abcdef"
GLOBEX_KEY = "gw-globex-0123456789abcdef"
INITECH_KEY = "gw-initech-0123456789abcdef"


def config_dict(stub_url: str, **overrides: Any) -> dict[str, Any]:
    """Tiers on the stub (cheap echo, dear echo, failing, slow), three tenants."""
    base = f"{stub_url}/v1"
    data: dict[str, Any] = {
        "server": {"max_body_bytes": 64 * 1024, "max_messages": 64},
        "engine": {"dim": 64, "seed": 7},
        "tiers": {
            "small": {
                "base_url": base,
                "model": "echo-small",
                "cost_per_1k_input": 0.1,
                "cost_per_1k_output": 0.2,
                "params": {"max_tokens": 32},
            },
            "large": {
                "base_url": base,
                "model": "echo-large",
                "cost_per_1k_input": 1.0,
                "cost_per_1k_output": 2.0,
                "api_key_env": "TEST_UPSTREAM_KEY",
            },
            "broken": {
                "base_url": base,
                "model": "fail",
                "cost_per_1k_input": 0.0,
                "api_key_env": "TEST_UPSTREAM_KEY",
            },
            "sleepy": {"base_url": base, "model": "slow", "timeout_s": 0.3},
            "judge": {"base_url": base, "model": "judge-x", "cost_per_1k_input": 5.0},
        },
        "profiles": {
            "default": {"tiers": ["small", "large"], "cost_weight": 0.3},
            "failing": {"tiers": ["broken"], "fallback": False},
            "fallback": {"tiers": ["broken", "small"], "cost_weight": 0.3},
            "timeout": {"tiers": ["sleepy"], "fallback": False},
        },
        "tenants": {
            "acme": {"api_keys": [ACME_KEY]},
            "globex": {"api_keys": [GLOBEX_KEY]},
            "initech": {"api_keys": [INITECH_KEY], "adapter": "own"},
        },
    }
    for key, value in overrides.items():
        data[key] = value
    return data


def make_config(stub_url: str, **overrides: Any) -> GatewayConfig:
    """A validated config (the upstream key comes from a fake environment)."""
    return parse_config(config_dict(stub_url, **overrides), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})


@contextmanager
def running_gateway(config: GatewayConfig) -> Iterator[tuple[str, Any]]:
    """A real uvicorn serving the gateway; yields (base URL, app)."""
    app = create_app(config)
    with run_app(app) as url:
        yield url, app


@contextmanager
def running_stub(delay_s: float = 0.0) -> Iterator[tuple[str, StubUpstream]]:
    """The stub upstream on a real port."""
    stub = StubUpstream(delay_s)
    with run_app(stub) as url:
        yield url, stub
