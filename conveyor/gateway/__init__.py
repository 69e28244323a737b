"""The LLM gateway: how workers reach model providers; ``mock`` is a provider to test against."""
