"""The agency demo: seven agent roles, many tenants, one queue (``conveyor demo``)."""

from conveyor.demo.run import run_demo

__all__ = ["run_demo"]
