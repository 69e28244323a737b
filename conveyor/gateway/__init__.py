"""The LLM gateway: how workers reach model providers (``ctx.llm``); ``conveyor.mock_llm`` is
one to test against. ``docs/gateway.md`` describes configuration, budgets, accounting and
errors."""

from __future__ import annotations

from conveyor.gateway.accounting.records import CallCounters, CallOutcome, CallRecord, CallRecorder
from conveyor.gateway.bound import BoundLLM
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.gateway.budgets.budget import (
    AdmitAllBudget,
    Budget,
    BudgetAsk,
    CombinedBudget,
    Reservation,
)
from conveyor.gateway.chat import ChatChunk, ChatRequest, ChatResult, Message, Prompt
from conveyor.gateway.config import (
    LLM_CONFIG_ENV,
    GatewayConfig,
    gateway_config_from_env,
    load_gateway_config,
)
from conveyor.gateway.gateway import Gateway
from conveyor.gateway.hooks import AttemptInfo, LLMHook
from conveyor.gateway.model_routes import Target
from conveyor.gateway.scope import CallScope
from conveyor.gateway.streaming import ChatStream

__all__ = [
    "LLM_CONFIG_ENV",
    "AdmitAllBudget",
    "AttemptInfo",
    "BoundLLM",
    "BreakerRegistry",
    "Budget",
    "BudgetAsk",
    "CallCounters",
    "CallOutcome",
    "CallRecord",
    "CallRecorder",
    "CallScope",
    "ChatChunk",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "CombinedBudget",
    "Gateway",
    "GatewayConfig",
    "LLMHook",
    "Message",
    "Prompt",
    "Reservation",
    "Target",
    "gateway_config_from_env",
    "load_gateway_config",
]
