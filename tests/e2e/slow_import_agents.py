"""The e2e App behind an import that takes a while, like a real agent package loading its
dependencies: a signal sent meanwhile must not kill the worker."""

from __future__ import annotations

import time

time.sleep(3.0)

from tests.e2e.agents import app  # noqa: E402

__all__ = ["app"]
