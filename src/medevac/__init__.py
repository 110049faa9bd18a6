"""medevac: fault management and VM high availability for OpenStack clouds."""

__version__ = "0.1.0"
