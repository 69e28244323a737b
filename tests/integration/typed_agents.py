"""Handlers typed with pydantic models (module level, so their annotations resolve)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from conveyor import TaskContext


class Brief(BaseModel):
    topic: str
    words: int = Field(gt=0, le=5000)


class Draft(BaseModel):
    title: str
    words: int


async def copywriter(ctx: TaskContext, brief: Brief) -> Draft:
    return Draft(title=f"On {brief.topic}", words=brief.words)


def sync_copywriter(ctx: TaskContext, brief: Brief) -> Draft:
    return Draft(title=brief.topic.upper(), words=brief.words)
