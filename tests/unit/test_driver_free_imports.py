"""The gateway, the SDK surface and the store seam's types import without the driver.

Each import runs in a fresh interpreter: this test process has asyncpg loaded already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "conveyor",
        "conveyor.gateway",
        "conveyor.gateway.stores",
        "conveyor.store.params",
        "conveyor.store.records",
        "conveyor.store.ports",
        "conveyor.store.tenant",
    ],
)
def test_importing_the_seam_does_not_import_the_driver(module: str) -> None:
    code = f"import sys, {module}; assert 'asyncpg' not in sys.modules, 'asyncpg imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
