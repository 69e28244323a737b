"""Declarative agents' pure parts: the sandboxed prompt template, the definition's checks, the
output schema and its repair words, the agents file, and the submit check's 422."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.api.agent_definitions import AgentDefinitionCache
from conveyor.api.problems import Problem
from conveyor.core.agent_definition import AgentDefinition
from conveyor.core.prompt_template import MissingField, PromptTemplate, TemplateProblem
from conveyor.core.reply_schema import (
    MAX_PROBLEMS,
    REPAIR_HEADING,
    OutputSchema,
    SchemaProblem,
    repair_request,
)
from conveyor.errors import ConfigurationError, InvalidAgentDefinition
from conveyor.mock_llm import MockConfig, ReplyRule
from conveyor.store.records import StoredAgentDefinition
from conveyor.worker.agents_file import read_agents

SCHEMA = {
    "type": "object",
    "required": ["headline", "words"],
    "properties": {"headline": {"type": "string"}, "words": {"type": "integer"}},
}
# Jinja's keywords and global names (``range``, ``dict``...) are not payload fields.
RESERVED = {"if", "in", "is", "or", "and", "not", "for", "true", "false", "none", "self"}
RESERVED |= {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "super"}
NAMES = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8).filter(
    lambda n: n not in RESERVED
)


# -- the prompt template ------------------------------------------------------------------


@given(st.dictionaries(NAMES, st.text(max_size=20), min_size=1, max_size=6))
def test_a_template_renders_every_field_and_names_any_missing_one(fields: dict[str, str]) -> None:
    template = PromptTemplate(" | ".join(f"{{{{ {name} }}}}" for name in fields))
    assert template.render(fields) == " | ".join(fields.values())
    assert set(template.fields) == set(fields)
    for name in fields:
        partial = {k: v for k, v in fields.items() if k != name}
        with pytest.raises(MissingField) as caught:
            template.render(partial)
        assert caught.value.field == f"payload.{name}"
        assert repr(name) in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "payload.brief"),
        ({"brief": {}}, "payload.brief.audience"),
        ({"brief": {"audience": "a"}, "items": [{"x": 1}]}, "payload.items[0].name"),
    ],
)
def test_a_missing_nested_value_is_named_by_its_path(payload: dict[str, Any], field: str) -> None:
    template = PromptTemplate(
        "{{ brief.audience }}{% for item in items %}{{ item.name }}{% endfor %}"
    )
    with pytest.raises(MissingField) as caught:
        template.render(payload)
    assert caught.value.field == field


def test_an_optional_field_can_be_tested_with_is_defined() -> None:
    template = PromptTemplate("a{% if tone is defined %} in a {{ tone }} tone{% endif %}")
    assert template.render({}) == "a"
    assert template.render({"tone": "dry"}) == "a in a dry tone"


@pytest.mark.parametrize(
    ("source", "payload", "said"),
    [
        ("{{ x.__class__ }}", {"x": 1}, "unsafe"),
        ("{{ items.append(1) }}", {"items": []}, "unsafe"),
        ("{% for i in range(10**9) %}{% endfor %}", {}, "MAX_RANGE"),
        ("{{ n + 1 }}", {"n": "text"}, "TypeError"),
        ("{% for i in range(99999) %}{{ big }}{% endfor %}", {"big": "x" * 100}, "longer than"),
    ],
)
def test_the_sandbox_refuses_what_a_template_must_not_do(
    source: str, payload: dict[str, Any], said: str
) -> None:
    with pytest.raises(TemplateProblem) as caught:
        PromptTemplate(source).render(payload)
    assert not isinstance(caught.value, MissingField)
    assert said in str(caught.value)


def test_a_syntax_error_names_its_line() -> None:
    with pytest.raises(TemplateProblem, match="line 2"):
        PromptTemplate("fine\n{{ broken }")


# -- the definition -----------------------------------------------------------------------


def good(**changes: Any) -> dict[str, Any]:
    return {"model": "writer", "prompt_template": "About {{ topic }}", **changes}


def test_a_definition_round_trips_through_its_document() -> None:
    document = good(
        system_prompt="Be brief.",
        temperature=0.2,
        max_tokens=300,
        output_schema=SCHEMA,
        concurrency=4,
        timeout=30,
        max_attempts=2,
        description="headlines",
    )
    definition = AgentDefinition.from_document("h", document)
    assert definition.document() == document
    assert AgentDefinition.from_document("h", definition.document()) == definition
    assert definition.fields == ("topic",)


def test_every_problem_of_a_definition_is_named_at_once() -> None:
    document = {
        "prompt_template": "{{ a }",
        "temprature": 0.5,
        "temperature": 3,
        "max_tokens": True,
        "output_schema": {"type": "nosuch"},
    }
    with pytest.raises(InvalidAgentDefinition) as caught:
        AgentDefinition.from_document("h", document)
    problems = " | ".join(caught.value.problems)
    assert "temprature: unknown field (did you mean 'temperature'?)" in problems
    assert "model: required" in problems
    assert "temperature: must be >= 0 and <= 2" in problems
    assert "max_tokens: must be a whole number" in problems
    assert "prompt_template: line 1" in problems
    assert "output_schema: $.type" in problems
    assert isinstance(caught.value, ConfigurationError)  # a file's mistake stops a worker
    assert str(caught.value).startswith("agent 'h': ")


def test_the_model_is_checked_when_the_caller_can_tell() -> None:
    def known(model: str) -> str | None:
        return None if model == "writer" else f"unknown model {model!r}"

    AgentDefinition.from_document("h", good(), model_check=known)
    with pytest.raises(InvalidAgentDefinition, match="model: unknown model 'other'"):
        AgentDefinition.from_document("h", good(model="other"), model_check=known)


def test_the_messages_carry_the_system_prompt_and_the_schema() -> None:
    definition = AgentDefinition.from_document(
        "h", good(system_prompt="Be brief.", output_schema=SCHEMA)
    )
    system, user = definition.messages({"topic": "shoes"})
    assert user == {"role": "user", "content": "About shoes"}
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\n")
    assert json.loads(system["content"].split("\n")[-1]) == SCHEMA
    bare = AgentDefinition.from_document("h", good())
    assert bare.messages({"topic": "x"}) == [{"role": "user", "content": "About x"}]


# -- the output schema ----------------------------------------------------------------------


def test_a_reply_is_validated_with_every_problem_named_by_its_path() -> None:
    schema = OutputSchema(SCHEMA)
    assert schema.problems('{"headline": "h", "words": 2}') == ({"headline": "h", "words": 2}, [])
    assert schema.problems('```json\n{"headline": "h", "words": 2}\n```')[1] == []
    value, problems = schema.problems('{"headline": 7}')
    assert value == {"headline": 7}
    assert problems == [
        "$: 'words' is a required property",
        "$.headline: 7 is not of type 'string'",
    ]
    assert schema.problems("Sure! Here it is")[1][0].startswith("the reply is not JSON")


def test_problems_are_capped() -> None:
    schema = OutputSchema({"type": "array", "items": {"type": "integer"}})
    _, problems = schema.problems(json.dumps(["x"] * (MAX_PROBLEMS + 5)))
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1] == "... and 5 more"


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"type": 5}, "$.type"),
        ({"properties": {"a": {"$ref": "https://example.com/s.json"}}}, "points outside"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_a_bad_schema_is_refused(schema: Any, said: str) -> None:
    with pytest.raises(SchemaProblem, match=said.replace("$", r"\$")):
        OutputSchema(schema)


def test_a_local_reference_is_allowed() -> None:
    schema = OutputSchema({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"})
    assert schema.problems("3")[1] == [] and schema.problems('"x"')[1]


def test_the_repair_request_lists_the_problems_and_the_schema() -> None:
    schema = OutputSchema(SCHEMA)
    text = repair_request(["$.a: wrong", "$.b: also"], schema)
    assert text.startswith(REPAIR_HEADING) and "- $.a: wrong\n- $.b: also" in text
    assert json.loads(text.split("\n")[-1]) == SCHEMA


# -- the agents file ------------------------------------------------------------------------


def test_the_agents_file_takes_a_schema_as_a_table_or_as_json_text() -> None:
    found = read_agents(
        {
            "agents": {
                "a": good(output_schema=json.dumps(SCHEMA)),
                "b": good(output_schema=SCHEMA),
            }
        },
        "agents.toml",
    )
    assert found["a"].output_schema == found["b"].output_schema == SCHEMA


@pytest.mark.parametrize(
    ("document", "said"),
    [
        ({}, "defines no agents"),
        ({"agent": {}}, "unknown top-level key(s) agent"),
        ({"agents": {"bad role": good()}}, "agents.bad role: invalid queue name"),
        (
            {"agents": {"a": good(output_schema="{nope")}},
            "agents.a.output_schema: not valid JSON",
        ),
        ({"agents": {"a": good(timeout=0)}}, "agents.a.timeout: must be > 0"),
    ],
)
def test_a_wrong_agents_file_names_the_file_the_role_and_the_field(
    document: dict[str, Any], said: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read_agents(document, "agents.toml")
    assert str(caught.value).startswith("agents.toml: ") and said in str(caught.value)


# -- the submit check ---------------------------------------------------------------------------


async def test_the_submit_check_names_each_missing_field_and_ignores_other_queues() -> None:
    async def nothing(roles: Sequence[str] | None) -> list[StoredAgentDefinition]:
        return []

    async def no_versions() -> dict[str, int]:
        return {}

    cache = AgentDefinitionCache(nothing, no_versions)
    definition = AgentDefinition.from_document("h", good())
    stored = StoredAgentDefinition("h", 3, definition.document(), b"", "api", None)  # type: ignore[arg-type]
    cache.learn(stored, definition)
    cache.check([("", "h", {"topic": "x"}), ("", "other", {})])
    with pytest.raises(Problem) as caught:
        cache.check([("tasks.0.", "h", {"topic": "x"}), ("tasks.1.", "h", {})])
    problem = caught.value
    assert problem.status == 422 and problem.kind == "validation"
    errors = problem.extra["errors"]
    assert [e["field"] for e in errors] == ["tasks.1.payload.topic"]
    assert errors[0]["location"] == ["body", "tasks", 1, "payload", "topic"]
    assert "version 3" in errors[0]["message"]


# -- the mock's reply rules ---------------------------------------------------------------------


def test_the_mock_answers_by_the_first_rule_whose_texts_all_appear() -> None:
    config = MockConfig(
        response_text="default",
        reply_rules=(
            ReplyRule(when=("alpha", "beta"), reply="both"),
            ReplyRule(when=("alpha",), reply="one"),
        ),
    )
    assert config.reply_for(("system: alpha", "user: beta")) == "both"
    assert config.reply_for(("alpha",)) == "one"
    assert config.reply_for(("gamma",)) == "default"
    assert MockConfig().reply_for(("alpha",)) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
SCHEMA_KEYS = st.sampled_from(["type", "$schema", "$ref", "properties", "items", "enum", "format"])


@given(
    st.fixed_dictionaries(
        {"model": st.text(max_size=5), "prompt_template": st.text(max_size=20)},
        optional={
            "temperature": JSON,
            "max_tokens": JSON,
            "timeout": JSON,
            "output_schema": st.dictionaries(SCHEMA_KEYS, JSON, max_size=3) | JSON,
        },
    )
)
def test_any_document_reads_or_is_refused_with_its_problems(document: dict[str, Any]) -> None:
    try:
        definition = AgentDefinition.from_document("h", document)
    except InvalidAgentDefinition as exc:
        assert exc.problems
        return
    if definition.schema is not None:
        definition.schema.problems('{"a": 1}')  # never raises: problems are values


def test_the_example_of_docs_agents_md_loads_with_its_gateway_config(tmp_path: Path) -> None:
    from conveyor.cli.agent_model_check import model_check
    from conveyor.gateway.config import load_gateway_config
    from conveyor.worker.agents_file import load_agents_file

    text = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text("utf-8")
    blocks = {b.split("\n")[0]: b for b in re.findall(r"```toml\n(.*?)```", text, re.S)}
    (tmp_path / "agents.toml").write_text(blocks["# agents.toml"])
    (tmp_path / "llm.toml").write_text(blocks["# llm.toml: the gateway (docs/gateway.md)"])
    check = model_check(load_gateway_config(tmp_path / "llm.toml"))
    agents = load_agents_file(tmp_path / "agents.toml", model_check=check)
    writer = agents["headline-writer"]
    assert writer.fields == ("audience", "product", "tone")
    assert "Tone" not in writer.messages({"product": "p", "audience": "a"})[-1]["content"]
    with pytest.raises(MissingField, match="'audience'"):
        writer.check_payload({"product": "trail shoes"})
