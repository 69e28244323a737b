"""The webhook adapter's pure rules: signatures (and replays) on the runtime's side, the
operator's allow-list, callback tokens, adapter overrides and result reports."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.webhooks import (
    SIGNATURE_TOLERANCE,
    ExternalRuntime,
    ReplayGuard,
    Report,
    SignatureInvalid,
    adapter_url,
    check_adapter_override,
    check_url,
    new_token,
    parse_allowed,
    parse_report,
    read_signal,
    sign,
    token_hash,
    url_allowed,
    verify_signature,
)
from conveyor.errors import ConfigurationError, InvalidTask
from conveyor.store.params import TenantAgentUpdate

secrets_ = st.text(min_size=1, max_size=40)
bodies = st.binary(max_size=300)
stamps = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)
labels = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)
hosts = st.lists(labels, min_size=1, max_size=3).map(".".join)


@given(
    secrets_,
    stamps,
    bodies,
    st.floats(min_value=-SIGNATURE_TOLERANCE, max_value=SIGNATURE_TOLERANCE),
)
def test_a_signed_body_verifies_within_the_tolerance(
    secret: str, timestamp: int, body: bytes, skew: float
) -> None:
    header = sign(secret, timestamp, body)
    assert verify_signature(secret, header, body, timestamp + skew) == timestamp


@given(secrets_, stamps, bodies, bodies)
def test_another_body_does_not_verify(
    secret: str, timestamp: int, body: bytes, other: bytes
) -> None:
    header = sign(secret, timestamp, body)
    if other != body:
        with pytest.raises(SignatureInvalid, match="does not match"):
            verify_signature(secret, header, other, timestamp)


@given(secrets_, secrets_, stamps, bodies)
def test_another_secret_does_not_verify(
    secret: str, other: str, timestamp: int, body: bytes
) -> None:
    if other != secret:
        with pytest.raises(SignatureInvalid):
            verify_signature(other, sign(secret, timestamp, body), body, timestamp)


@given(secrets_, stamps, bodies, st.floats(min_value=SIGNATURE_TOLERANCE + 1, max_value=1e7))
def test_a_stale_delivery_is_refused_as_a_replay(
    secret: str, timestamp: int, body: bytes, age: float
) -> None:
    header = sign(secret, timestamp, body)
    with pytest.raises(SignatureInvalid, match="replay"):
        verify_signature(secret, header, body, timestamp + age)


@given(secrets_, stamps, bodies, st.integers(min_value=1, max_value=10**6))
def test_a_re_dated_signature_does_not_verify(
    secret: str, timestamp: int, body: bytes, shift: int
) -> None:
    """The timestamp is inside the MAC: moving it to now breaks the signature."""
    mac = sign(secret, timestamp, body).partition(",v1=")[2]
    forged = f"t={timestamp + shift},v1={mac}"
    with pytest.raises(SignatureInvalid):
        verify_signature(secret, forged, body, timestamp + shift)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=12", "t=x,v1=ab", "garbage"])
def test_a_malformed_header_is_refused(header: str | None) -> None:
    with pytest.raises(SignatureInvalid):
        verify_signature("s", header, b"{}", 12)


def test_a_rotated_secret_is_accepted_by_any_v1_entry() -> None:
    new = sign("new", 100, b"{}")
    old_mac = sign("old", 100, b"{}").partition(",v1=")[2]
    assert verify_signature("new", f"{new},v1={old_mac}", b"{}", 100) == 100
    assert verify_signature("old", f"{new},v1={old_mac}", b"{}", 100) == 100


@given(secrets_, stamps, bodies)
def test_the_replay_guard_accepts_a_delivery_once(secret: str, timestamp: int, body: bytes) -> None:
    guard = ReplayGuard(secret)
    header = sign(secret, timestamp, body)
    assert guard.accept(header, body, timestamp) == timestamp
    with pytest.raises(SignatureInvalid, match="received before"):
        guard.accept(header, body, timestamp + 1)
    # a new delivery (new timestamp) of the same body is new
    assert guard.accept(sign(secret, timestamp + 2, body), body, timestamp + 2) == timestamp + 2


def test_the_replay_guard_forgets_what_its_tolerance_refuses_anyway() -> None:
    guard = ReplayGuard("s", tolerance=10)
    for t in range(100, 200):
        guard.accept(sign("s", t, b"x"), b"x", t)
    assert len(guard._seen) <= 11


@given(
    hosts,
    st.sampled_from(["http", "https"]),
    st.text(alphabet=string.ascii_lowercase + "/", max_size=20),
)
def test_a_listed_host_admits_its_urls_at_any_port_and_path(
    host: str, scheme: str, path: str
) -> None:
    for port in ("", ":8080"):
        assert url_allowed(f"{scheme}://{host}{port}/{path}", (host.upper(),))


@given(hosts, hosts)
def test_an_unlisted_host_is_refused(host: str, other: str) -> None:
    if other != host:
        assert not url_allowed(f"https://{other}/run", (host,))
        # a suffix that is not a subdomain boundary is another host
        assert not url_allowed(f"https://{other}{host}/run", (host,))


@given(hosts, labels)
def test_a_wildcard_admits_subdomains_only(host: str, sub: str) -> None:
    assert url_allowed(f"https://{sub}.{host}/x", (f"*.{host}",))
    assert not url_allowed(f"https://{host}/x", (f"*.{host}",))
    assert not url_allowed(f"https://{sub}{host}/x", (f"*.{host}",))


@given(hosts, labels, labels)
def test_a_url_prefix_matches_at_a_path_boundary(host: str, segment: str, rest: str) -> None:
    prefix = f"https://{host}/{segment}"
    assert url_allowed(prefix, (prefix,))
    assert url_allowed(f"{prefix}/{rest}", (prefix + "/",))
    assert not url_allowed(f"{prefix}{rest}", (prefix,))
    assert not url_allowed(f"http://{host}/{segment}", (prefix,))  # the scheme is part of it


@given(hosts, labels)
def test_credentials_in_a_url_never_pass(host: str, user: str) -> None:
    assert not url_allowed(f"https://{user}@{host}/x", (host,))
    assert not url_allowed(f"https://{host}@evil.example/x", (host,))


@pytest.mark.parametrize(
    "url", ["ftp://a.io/x", "file:///etc/passwd", "a.io/x", "https://", "https://a.io:port/x"]
)
def test_what_is_not_an_http_url_is_refused(url: str) -> None:
    assert not url_allowed(url, ("a.io",))


def test_the_refusal_names_the_setting() -> None:
    with pytest.raises(ValueError, match="CONVEYOR_WEBHOOK_ALLOWED_HOSTS admits nothing"):
        check_url("https://a.io/x", ())
    assert check_url("https://a.io/x", parse_allowed("b.io, a.io")) == "https://a.io/x"


def test_the_allow_list_setting_parses_commas_and_spaces() -> None:
    assert parse_allowed(" a.io,b.io  https://c.io/hooks ,") == (
        "a.io",
        "b.io",
        "https://c.io/hooks",
    )
    assert parse_allowed(None) == ()


@given(st.integers(min_value=0, max_value=50))
def test_tokens_are_fresh_and_hashed(n: int) -> None:
    token = new_token()
    assert token.startswith("cvt_") and len(token) > 40
    assert token != new_token()
    assert token_hash(token) == token_hash(token) and token not in token_hash(token)


def test_adapter_overrides() -> None:
    assert adapter_url("webhook:https://a.io/run") == "https://a.io/run"
    assert adapter_url("python") is None and adapter_url(None) is None
    assert check_adapter_override("python") == "python"
    for bad in ("webhook:", "webhook:ftp://a.io", "lambda", "webhook:https://"):
        with pytest.raises(ValueError, match="adapter_override must be"):
            check_adapter_override(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(json_values)
def test_a_success_report_round_trips_through_its_signal(result: Any) -> None:
    report = parse_report({"status": "succeeded", "result": result})
    assert report == Report(True, result=result)
    assert read_signal(report.as_signal()) == report


@given(st.text(min_size=1, max_size=50).filter(str.strip), st.booleans())
def test_a_failure_report_round_trips_through_its_signal(error: str, retryable: bool) -> None:
    report = parse_report({"status": "failed", "error": error, "retryable": retryable})
    assert report == Report(False, error=error, retryable=retryable)
    assert read_signal(report.as_signal()) == report


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"status": "done"}, "'succeeded' or 'failed'"),
        ({"status": "failed"}, "needs 'error'"),
        ({"status": "failed", "error": "x", "retryable": "yes"}, "true or false"),
        ({"status": "succeeded", "result": 1, "extra": 2}, "unknown field"),
    ],
)
def test_a_malformed_report_says_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_report(body)


def test_an_external_runtime_checks_its_settings() -> None:
    runtime = ExternalRuntime("https://a.io/run", timeout=30)
    assert runtime.longest_wait == 300
    assert ExternalRuntime("https://a.io/run", timeout=30, max_wait=60).longest_wait == 60
    for bad in (
        {"url": "ftp://a.io"},
        {"url": "https://a.io", "timeout": 0},
        {"url": "https://a.io", "timeout": 30, "max_wait": 10},
    ):
        with pytest.raises(ConfigurationError):
            ExternalRuntime(**bad)  # type: ignore[arg-type]


def test_a_tenants_adapter_override_is_checked_where_it_is_written() -> None:
    assert TenantAgentUpdate("acme", "seo", adapter_override="webhook:https://a.io/run")
    assert TenantAgentUpdate("acme", "seo", adapter_override="python")
    with pytest.raises(InvalidTask, match="adapter_override must be 'python' or 'webhook:'"):
        TenantAgentUpdate("acme", "seo", adapter_override="webhook:ftp://a.io")
