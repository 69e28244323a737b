"""Pure logic with no I/O: the state machine, retry and backoff, durations, partitions, cron.

Nothing here touches a database, a socket, a clock or a sleep; callers pass ``now`` and
randomness in, so every function is deterministic and property-tested.
"""
