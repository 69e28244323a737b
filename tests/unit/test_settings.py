"""Settings: documented defaults, environment overrides, and errors that name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor.errors import ConfigurationError
from conveyor.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CONVEYOR_* or DATABASE_URL from the machine running the tests, no stray .env."""
    for name in list(os.environ):
        if name.startswith("CONVEYOR_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_suit_one_machine() -> None:
    settings = load_settings()
    assert settings.database_url is None  # the embedded server
    assert settings.embedded_dir is None
    assert (settings.pool_min_size, settings.pool_max_size) == (1, 10)
    assert settings.statement_cache_size == 100
    assert settings.lease_seconds == 30.0
    assert settings.heartbeat_seconds == 5.0
    assert settings.reaper_seconds == 2.0
    assert settings.promote_seconds == 0.5
    assert settings.poll_seconds == 2.0
    assert settings.retention == "90d"


def test_every_field_documents_itself() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "60")
    monkeypatch.setenv("CONVEYOR_HEARTBEAT_SECONDS", "10.5")
    monkeypatch.setenv("CONVEYOR_RETENTION", "2w")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db/conveyor")
    settings = load_settings()
    assert settings.lease_seconds == 60.0
    assert settings.heartbeat_seconds == 10.5
    assert settings.retention == "2w"
    assert settings.database_url == "postgresql://app@db/conveyor"


def test_prefixed_database_url_is_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://other/db")
    assert load_settings().database_url == "postgresql://other/db"


def test_flags_override_the_environment_and_none_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "60")
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    settings = load_settings(
        lease_seconds=90, database_url="postgresql://flag/db", poll_seconds=None
    )
    assert settings.lease_seconds == 90.0
    assert settings.database_url == "postgresql://flag/db"
    assert settings.poll_seconds == 2.0


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.lease_seconds = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("lease", "heartbeat"), [("30", "15.01"), ("30", "20"), ("10", "30")])
def test_heartbeat_over_half_the_lease_names_both_variables(
    monkeypatch: pytest.MonkeyPatch, lease: str, heartbeat: str
) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", lease)
    monkeypatch.setenv("CONVEYOR_HEARTBEAT_SECONDS", heartbeat)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "CONVEYOR_HEARTBEAT_SECONDS" in message
    assert "CONVEYOR_LEASE_SECONDS" in message
    assert "half" in message


def test_heartbeat_of_exactly_half_the_lease_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "30")
    monkeypatch.setenv("CONVEYOR_HEARTBEAT_SECONDS", "15")
    assert load_settings().heartbeat_seconds == 15.0


def test_the_rule_also_holds_for_flags() -> None:
    with pytest.raises(ConfigurationError, match="CONVEYOR_HEARTBEAT_SECONDS"):
        load_settings(lease_seconds=4, heartbeat_seconds=3)


@pytest.mark.parametrize("value", ["abc", "", "-1", "0", "inf", "nan", "1e400"])
def test_invalid_numbers_are_a_configuration_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid configuration: CONVEYOR_LEASE_SECONDS: ")
    assert "pydantic" not in message
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, ValidationError)


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "soon")
    monkeypatch.setenv("CONVEYOR_POOL_MAX_SIZE", "0")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "CONVEYOR_LEASE_SECONDS" in str(caught.value)
    assert "CONVEYOR_POOL_MAX_SIZE" in str(caught.value)


def test_pool_sizes_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_POOL_MIN_SIZE", "20")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "CONVEYOR_POOL_MIN_SIZE (20)" in str(caught.value)
    assert "CONVEYOR_POOL_MAX_SIZE (10)" in str(caught.value)


@pytest.mark.parametrize("value", ["forever", "90", "-1d"])
def test_retention_must_be_a_duration(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CONVEYOR_RETENTION", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "CONVEYOR_RETENTION" in str(caught.value)
    assert "e.g. 90d" in str(caught.value)


def test_unknown_conveyor_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other tools (and the CLI's own flags) share the prefix; they must not break loading.
    monkeypatch.setenv("CONVEYOR_SOMETHING_ELSE", "x")
    assert load_settings().lease_seconds == 30.0


@pytest.mark.parametrize("value", ["", "  "])
def test_a_set_but_empty_database_url_is_refused_not_taken_for_unset(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid configuration: DATABASE_URL: is set but empty")
    assert "unset it to use the embedded server" in message
    with pytest.raises(ConfigurationError, match="DATABASE_URL: is set but empty"):
        load_settings(database_url="")  # the --database-url flag


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("postgresql://app:s3cret@db:abc/conveyor", "port 'abc'"),
        ("postgresql://app:s3cret@db:99999/conveyor", "number from 1 to 65535"),
        ("postgresql://app:s3cret@db:/conveyor", "port ''"),
        ("postgresql://app:s3cret@[::1/conveyor", "IPv6 host goes in brackets"),
        ("postgresql://app:s3cret@::1:5432/conveyor", "IPv6 address goes in brackets"),
        ("postgresql://app:s3cret@[::1]x/conveyor", "malformed IPv6 host"),
        ("postgresql://app:s3cret@db1,,db2/conveyor", "empty host"),
        ("postgresql://app:s3cret@/conveyor?host=/run&port=x", "port 'x'"),
        ("mysql://app:s3cret@db/conveyor", "must start with postgresql://"),
        ("db.internal:5432", "must start with postgresql://"),
    ],
)
def test_a_malformed_database_url_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str, hint: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid configuration: DATABASE_URL: ")
    assert hint in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@db/conveyor",
        "postgres://app:secret@db.internal:5432/conveyor",
        "postgresql://app@[::1]:5432/conveyor",
        "postgresql://app@[fe80::1%25eth0]/conveyor",
        "postgresql://app@db1:5432,db2:5433/conveyor?target_session_attrs=read-write",
        "postgresql://postgres:@/conveyor?host=/var/lib/conveyor/pgdata",
        "postgresql:///conveyor",
        "postgresql://app:p%40ss@db/conveyor",
    ],
)
def test_well_formed_database_urls_pass_unchanged(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    assert load_settings().database_url == url


def test_the_direct_database_url_defaults_to_none_and_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@pgbouncer:6432/conveyor")
    assert load_settings().direct_database_url is None  # LISTEN, migrations: DATABASE_URL
    monkeypatch.setenv("CONVEYOR_DIRECT_DATABASE_URL", "postgresql://app@db:5432/conveyor")
    assert load_settings().direct_database_url == "postgresql://app@db:5432/conveyor"


def test_a_malformed_direct_database_url_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@pgbouncer:6432/conveyor")
    monkeypatch.setenv("CONVEYOR_DIRECT_DATABASE_URL", "postgresql://app:s3cret@db:abc/conveyor")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid configuration: CONVEYOR_DIRECT_DATABASE_URL: ")
    assert "port 'abc'" in message and "s3cret" not in message


def test_a_direct_database_url_without_database_url_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The embedded server has no pooler in front: a direct URL alone is a mistake.
    monkeypatch.setenv("CONVEYOR_DIRECT_DATABASE_URL", "postgresql://app@db:5432/conveyor")
    with pytest.raises(ConfigurationError, match="set without DATABASE_URL"):
        load_settings()
