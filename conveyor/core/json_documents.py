"""What a JSON document must be to be stored as jsonb and handed to an agent.

PostgreSQL's jsonb refuses NaN and Infinity and the NUL character (``\\u0000``) in strings;
a document nested thousands deep costs a parser's stack. Checked at the door, each is a
clear 4xx naming where in the document it is, instead of a database error later.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

MAX_DEPTH = 32


class DocumentProblem(ValueError):
    """A document that cannot be stored; ``path`` says where (``payload.items[3].price``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def check_document(value: Any, path: str = "payload", max_depth: int = MAX_DEPTH) -> None:
    """Raise DocumentProblem if ``value`` holds NaN/Infinity, a NUL, or nests too deep."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > max_depth:
            raise DocumentProblem(where, f"nested deeper than {max_depth} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise DocumentProblem(where, f"{item} is not a JSON number (NaN and Infinity are not)")
        if isinstance(item, str) and _has_surrogate(item):
            raise DocumentProblem(where, "contains a lone surrogate (\\ud800-\\udfff): not UTF-8")
        if isinstance(item, str) and "\x00" in item:
            raise DocumentProblem(
                where, "contains a NUL character (\\u0000), which cannot be stored"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    raise DocumentProblem(where, "a key contains a NUL character (\\u0000)")
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))


def fingerprint(document: Any) -> bytes:
    """The SHA-256 of ``document``'s canonical JSON (keys sorted, no spaces): equal for
    equal documents however their keys were ordered (the idempotency fingerprint)."""
    canonical = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).digest()


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
