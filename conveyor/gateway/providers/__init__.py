"""Provider wire formats: the only modules that know a provider's request and reply shapes."""

from __future__ import annotations

from conveyor.gateway.providers.anthropic_messages import AnthropicMessages
from conveyor.gateway.providers.base import BadReply, Piece, Reply, WireFormat
from conveyor.gateway.providers.ollama_chat import OllamaChat
from conveyor.gateway.providers.openai_chat import MaxTokensField, OpenAIChat

__all__ = [
    "AnthropicMessages",
    "BadReply",
    "MaxTokensField",
    "OllamaChat",
    "OpenAIChat",
    "Piece",
    "Reply",
    "WireFormat",
]
