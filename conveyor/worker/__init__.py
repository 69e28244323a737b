"""The worker runtime: the claim loop, leases, execution of handlers and maintenance."""
