"""Lab support: emulated infrastructure for simulated compute hosts."""
