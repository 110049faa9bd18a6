"""Monitor: turns signals (heartbeats, BMCs, Nova, external monitors) into verdicts."""
