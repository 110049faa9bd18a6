"""Several controllers: membership, each host's owner, and the fencing of stale owners."""
