"""The event log as Server-Sent Events: the hub that reads the log once per process, the
wake-ups that tell it to read (PostgreSQL or Redis), and the streams it feeds."""
