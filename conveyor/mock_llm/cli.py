"""``conveyor mock-llm``: serve the mock LLM from the command line.

``conveyor/cli/mock_llm.py`` runs it (imported only then); ``python -m conveyor.mock_llm`` runs the
same command.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.core.durations import parse_duration
from conveyor.errors import ConfigurationError
from conveyor.mock_llm.config import build_config, parse_fault_rates, parse_script
from conveyor.mock_llm.server import run_mock_llm


def parse_seconds(text: str, flag: str) -> float:
    """``250ms``, ``1.5`` (seconds), ``2s`` or ``1m30s`` in seconds; BadParameter names the flag."""
    cleaned = text.strip().lower()
    try:
        if cleaned.endswith("ms") and cleaned[:-2].replace(".", "", 1).isdigit():
            return float(cleaned[:-2]) / 1000
        if cleaned.replace(".", "", 1).isdigit():
            return float(cleaned)
        return parse_duration(cleaned).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(
            f"{exc}; 250ms and 1.5 (seconds) work too", param_hint=flag
        ) from None


def _optional_seconds(text: str | None, flag: str) -> float | None:
    return None if text is None else parse_seconds(text, flag)


def mock_llm_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8900,
    latency: Annotated[
        str | None,
        typer.Option(help="Total time of a non-streaming reply, e.g. 1s (default: ttft + pace)."),
    ] = None,
    ttft: Annotated[str, typer.Option(help="Time to the first streamed token.")] = "0s",
    tokens_per_second: Annotated[
        float | None, typer.Option(help="Streaming pace (default: as fast as possible).")
    ] = None,
    response_text: Annotated[
        str | None, typer.Option(help="Fixed reply text (default: derived from the prompt).")
    ] = None,
    reply_tokens: Annotated[int, typer.Option(help="Length of a derived reply in tokens.")] = 16,
    error_rate: Annotated[
        str, typer.Option(help="Fault probabilities, e.g. 429=0.1,503=0.02,reset=0.01.")
    ] = "",
    script: Annotated[
        str, typer.Option(help="Outcomes of the first requests in order, e.g. 429,ok,503,stall.")
    ] = "",
    retry_after: Annotated[str, typer.Option(help="Retry-After of injected 429s.")] = "1s",
    stall_after_tokens: Annotated[
        int, typer.Option(help="Tokens a stalled stream sends before going silent.")
    ] = 2,
    stall: Annotated[
        str, typer.Option(help="How long a stall lasts, or 'forever' (until the client quits).")
    ] = "forever",
    slow_start: Annotated[str, typer.Option(help="First-byte delay of a slow_start.")] = "5s",
    rate_limit_rpm: Annotated[
        int | None, typer.Option(help="Requests per sliding minute; more get 429 (default: off).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --error-rate draws.")] = 0,
) -> None:
    """Serve a mock OpenAI / Anthropic / Ollama API with configurable latency and faults."""
    try:
        rates = parse_fault_rates(error_rate)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--error-rate") from None
    try:
        outcomes = parse_script(script)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--script") from None
    fields: dict[str, Any] = {
        "latency": _optional_seconds(latency, "--latency"),
        "ttft": parse_seconds(ttft, "--ttft"),
        "tokens_per_second": tokens_per_second,
        "response_text": response_text,
        "reply_tokens": reply_tokens,
        "fault_rates": rates,
        "script": outcomes,
        "retry_after": parse_seconds(retry_after, "--retry-after"),
        "stall_after_tokens": stall_after_tokens,
        "stall_seconds": None if stall == "forever" else parse_seconds(stall, "--stall"),
        "slow_start_seconds": parse_seconds(slow_start, "--slow-start"),
        "rate_limit_rpm": rate_limit_rpm,
        "seed": seed,
    }
    try:
        config = build_config(fields)
        run_mock_llm(host, port, config, on_ready=_announce)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _announce(url: str) -> None:
    typer.echo(f"mock LLM listening on {url}  (OpenAI: {url}/v1, stats: {url}/mock/stats)")
