"""The gateway's TOML configuration: every mistake stops the start with a message naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sona.cli import main
from sona.errors import ConfigError
from sona.serve.config import load_config, parse_config

GOOD = """
[tiers.small]
base_url = "http://127.0.0.1:1/v1"
model = "m-small"
cost_per_1k_input = 0.1
[tiers.large]
base_url = "http://127.0.0.1:1/v1/"
model = "m-large"
api_key_env = "LARGE_KEY"
cost_per_1k_output = 2.0
timeout_s = 5
params = { max_tokens = 64 }
[profiles.cheap]
tiers = ["small"]
cost_weight = 1.0
[tenants.acme]
api_keys = ["0123456789abcdef-acme"]
adapter = "own"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sona.toml"
    path.write_text(text)
    return path


def test_a_good_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={"LARGE_KEY": "sk-secret-value"})
    assert [t.name for t in cfg.tiers] == ["small", "large"]
    large = cfg.tier("large")
    assert large.base_url == "http://127.0.0.1:1/v1" and large.api_key == "sk-secret-value"
    assert "sk-secret-value" not in repr(large) and "sk-secret-value" not in repr(cfg)
    assert dict(large.params) == {"max_tokens": 64}
    assert set(cfg.profiles) == {"default", "cheap"}
    assert cfg.profiles["default"].tiers == ("small", "large")
    assert cfg.tenants[0].adapter == "own"
    assert "0123456789abcdef-acme" not in repr(cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiers": {}}, "at least one"),
        ({"tiers": {"a": {"model": "m"}}}, "tiers.a.base_url: is required"),
        ({"tiers": {"a": {"base_url": "ftp://x", "model": "m"}}}, "http"),
        ({"tiers": {"a": {"base_url": "http://x", "model": "m", "timeout_s": -1}}}, "timeout_s"),
        ({"tiers": {"a": {"base_url": "http://x", "model": "m", "timeout_s": "5"}}}, "number"),
        ({"tiers": {"a": {"base_url": "http://x", "model": "m", "cost_per_1k_input": -0.1}}},
         "cost_per_1k_input"),
        ({"tiers": {"a": {"base_url": "http://x", "model": "m", "api_key_env": "NOPE"}}},
         "NOPE is not set"),
        ({"tiers": {"a": {"base_url": "http://x", "model": "m", "modle": "typo"}}},
         "unknown key(s) modle"),
        ({"tiers": {"a": {"base_url": "http://x", "model": "m", "params": {"stream": True}}}},
         "may not set stream"),
        ({"profiles": {"p": {"tiers": ["ghost"]}}}, "unknown tier"),
        ({"profiles": {"p": {"tiers": ["a", "a"]}}}, "twice"),
        ({"profiles": {"p": {"cost_weight": -1}}}, "cost_weight"),
        ({"tenants": {"t": {}}}, "needs api_keys"),
        ({"tenants": {"t": {"api_keys": ["short"]}}}, "16 characters"),
        ({"tenants": {"t": {"api_keys": ["x" * 20], "adapter": "mine"}}}, "adapter"),
        ({"tenants": {"t": {"api_keys": ["x" * 20]}, "u": {"api_keys": ["x" * 20]}}}, "shared"),
        ({"feedback": {"judge_tier": "ghost"}}, "judge_tier"),
        ({"feedback": {"judge_sample": 2.0}}, "judge_sample"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"max_body_bytes": 1}}, "max_body_bytes"),
        ({"server": {"log_level": "loud"}}, "log_level"),
        ({"engine": {"embedder": "word2vec"}}, "engine.embedder"),
        ({"engine": {"dim": True}}, "engine.dim"),
        ({"engine": {"per_tenant_adapters": "yes"}}, "engine.per_tenant_adapters"),
        ({"extra": 1}, "unknown key(s) extra"),
    ],
)  # fmt: skip
def test_bad_configs_name_the_key(change: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {"tiers": {"a": {"base_url": "http://x", "model": "m"}}, **change}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert message in str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[tiers.a\nbase_url = 1"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_bytes(tmp_path, b"\xff\xfe"))


def _bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bin.toml"
    path.write_bytes(data)
    return path


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, GOOD.replace('api_key_env = "LARGE_KEY"\n', ""))
    assert main(["serve", "--config", str(good), "--check"]) == 0
    assert "configuration OK: 2 tier(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[tiers.a]\nmodel = "m"\n')
    assert main(["serve", "--config", str(bad), "--check"]) == 1
    assert "tiers.a.base_url: is required" in capsys.readouterr().err


def test_upstream_key_with_a_line_break_is_refused() -> None:
    """The key goes into a header line: CR/LF would let the environment inject headers."""
    tier = {"base_url": "http://x", "model": "m", "api_key_env": "K"}
    with pytest.raises(ConfigError, match="non-printable"):
        parse_config({"tiers": {"a": tier}}, env={"K": "sk-abc\r\nx-evil: 1"})


def test_tenant_adapters_default_and_explicit() -> None:
    keys = {"api_keys": ["x" * 20]}
    data: dict[str, Any] = {
        "tiers": {"a": {"base_url": "http://x", "model": "m"}},
        "tenants": {"t": keys, "u": {"api_keys": ["y" * 20], "adapter": "shared"}},
    }
    assert {t.name: t.adapter for t in parse_config(data, env={}).tenants} == {
        "t": "shared",
        "u": "shared",
    }
    data["engine"] = {"per_tenant_adapters": True}
    assert {t.name: t.adapter for t in parse_config(data, env={}).tenants} == {
        "t": "micro",
        "u": "shared",
    }
