"""The gateway's configuration: files, env, aliases, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ConfigurationError, UnknownModel
from conveyor.gateway.config import LLM_CONFIG_ENV, gateway_config_from_env, load_gateway_config
from conveyor.gateway.model_routes import ModelRoutes, Target

BASE: dict[str, Any] = {
    "providers": {
        "openai": {"kind": "openai", "base_url": "https://api.openai.com", "api_key": "sk-1"},
        "local": {"kind": "ollama", "base_url": "http://127.0.0.1:11434"},
    },
    "aliases": {"writer": ["openai/gpt-4o-mini", {"provider": "local", "model": "llama3:8b"}]},
}

TOML = """
default_max_tokens = 512

[timeouts]
connect = 2
ttft = 20
gap = 30
total = 120

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com"
api_key_env = "OPENAI_API_KEY"
max_concurrency = 8

[aliases]
writer = ["openai/gpt-4o-mini"]
"""


def test_a_toml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "llm.toml"
    path.write_text(TOML)
    config = load_gateway_config(path)
    assert config.default_max_tokens == 512
    assert config.timeouts.layered().ttft == 20
    assert config.providers["openai"].max_concurrency == 8
    assert config.aliases["writer"][0].model == "gpt-4o-mini"


def test_env_names_a_json_file_or_holds_inline_json(tmp_path: Path) -> None:
    path = tmp_path / "llm.json"
    path.write_text(json.dumps(BASE))
    from_file = gateway_config_from_env({LLM_CONFIG_ENV: str(path)})
    inline = gateway_config_from_env({LLM_CONFIG_ENV: json.dumps(BASE)})
    assert from_file is not None and from_file == inline
    assert gateway_config_from_env({}) is None


def test_aliases_resolve_to_chains_and_provider_model_to_one_target() -> None:
    routes = ModelRoutes(load_gateway_config(BASE))
    assert routes.resolve("writer") == (
        "writer",
        (Target("openai", "gpt-4o-mini"), Target("local", "llama3:8b")),
    )
    assert routes.resolve("local/org/model:q4") == (
        "local/org/model:q4",
        (Target("local", "org/model:q4"),),
    )
    # A tenant's override replaces what the agent asked for.
    assert routes.resolve("writer", model_override="openai/gpt-4o")[1] == (
        Target("openai", "gpt-4o"),
    )
    with pytest.raises(UnknownModel, match=r"unknown model 'gpt-4o'.*writer"):
        routes.resolve("gpt-4o")
    with pytest.raises(UnknownModel):
        routes.resolve("nobody/gpt-4o")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timeouts": {"connect": 10, "ttft": 5}}, r"timeouts: ttft \(5s\) must be at least"),
        ({"aliases": {"x": ["ghost/m"]}}, "names provider 'ghost'"),
        ({"aliases": {"x": []}}, "empty chain"),
        ({"aliases": {"x": ["no-slash"]}}, "provider/model"),
        ({"retry": {"max_attempts": 0}}, "max_attempts"),
        ({"breaker": {"failure_rate": 2}}, "failure_rate"),
        ({"retyr": {}}, "retyr: Extra inputs are not permitted"),
        ({"providers": {"p": {"kind": "openai", "base_url": "ftp://x"}}}, "http"),
        ({"providers": {"p": {"kind": "openai", "base_url": "http://[::1"}}}, "not a URL"),
    ],
)
def test_a_bad_field_is_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_gateway_config({**BASE, **change})


def test_hosts_shared_by_providers_must_agree_on_their_pool() -> None:
    providers = {
        "a": {"kind": "openai", "base_url": "http://h:8000", "max_concurrency": 4},
        "b": {"kind": "ollama", "base_url": "http://h:8000/", "max_concurrency": 8},
    }
    with pytest.raises(ConfigurationError, match="share host http://h:8000"):
        load_gateway_config({"providers": providers})


def test_api_keys_never_show_and_a_missing_env_key_is_an_error() -> None:
    config = load_gateway_config(BASE)
    assert "sk-1" not in repr(config) and "sk-1" not in str(config.model_dump())
    assert config.providers["openai"].resolve_api_key("openai", {}) == "sk-1"
    named = load_gateway_config(
        {"providers": {"o": {"kind": "openai", "base_url": "http://x", "api_key_env": "K"}}}
    )
    assert named.providers["o"].resolve_api_key("o", {"K": "secret"}) == "secret"
    with pytest.raises(ConfigurationError, match="environment variable K"):
        named.providers["o"].resolve_api_key("o", {})


def test_unreadable_and_malformed_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_gateway_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[providers\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_gateway_config(bad)
