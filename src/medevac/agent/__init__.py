"""``medevac agent``: runs on each compute host and sends signed heartbeats."""
