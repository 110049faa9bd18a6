"""Drivers for baseboard management controllers (power fencing and confirmation)."""
