"""What the blocks ask of a BMC: its power state, and power off for fencing."""

from __future__ import annotations

from typing import Protocol

from medevac.bmc.ipmi import BmcError, PowerState


class PowerControl(Protocol):
    """One host's BMC, whatever its protocol (IPMI or Redfish)."""

    async def power_off(self) -> None: ...

    async def power_state(self) -> PowerState: ...

    async def close(self) -> None: ...


class BmcPowerReader:
    """The monitor's second path: each host's power state, read from its BMC."""

    def __init__(self, clients: dict[str, PowerControl]) -> None:
        self._clients = clients

    async def is_off(self, host: str) -> bool:
        """True when the BMC says off, False when on; raises BmcError when it cannot tell."""
        client = self._clients.get(host)
        if client is None:
            raise BmcError(f"no BMC for {host}")
        return await client.power_state() is PowerState.OFF

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
