"""The lab's BMCs: one emulated BMC per host, speaking IPMI (all served by one farm)
or, for the hosts named, Redfish; their power control reaches the fault model."""

from __future__ import annotations

import secrets

from medevac.lab.bmc_emulator import BmcFarm, BmcSpec, PowerHooks
from medevac.lab.layout import LabError
from medevac.lab.redfish_emulator import RedfishBmc

BMC_USER = "admin"


class LabBmcs:
    def __init__(self) -> None:
        self.farm: BmcFarm | None = None
        self.redfish: dict[str, RedfishBmc] = {}
        self.specs: dict[str, BmcSpec] = {}  # every host's, by host

    def start(self, hosts: list[str], redfish_hosts: tuple[str, ...], hooks: PowerHooks) -> None:
        """A BMC with a new password for every host; ``redfish_hosts`` speak Redfish."""
        unknown = set(redfish_hosts) - set(hosts)
        if unknown:
            raise LabError(f"--redfish names unknown hosts: {', '.join(sorted(unknown))}")
        self.farm = BmcFarm(hooks)
        for host in hosts:
            password = secrets.token_urlsafe(12)
            if host in redfish_hosts:
                self.redfish[host] = RedfishBmc(host, BMC_USER, password, hooks)
                self.redfish[host].start()
                self.specs[host] = self.redfish[host].spec
            else:
                self.specs[host] = self.farm.add(host, BMC_USER, password)
        self.farm.start()

    def protocol(self, host: str) -> str:
        return "redfish" if host in self.redfish else "ipmi"

    def set_reachable(self, host: str, reachable: bool) -> None:
        if host in self.redfish:
            self.redfish[host].reachable = reachable
        elif self.farm is not None:
            self.farm.set_reachable(host, reachable)

    def stop(self) -> None:
        if self.farm is not None:
            self.farm.stop()
        for bmc in self.redfish.values():
            bmc.stop()
