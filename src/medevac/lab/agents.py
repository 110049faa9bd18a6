"""The lab's agents: the same agent code as production, one per host whose OS runs,
with probes that read the fault model instead of the host."""

from __future__ import annotations

import asyncio
import functools

from medevac.agent.agent import Agent, AgentConfig
from medevac.lab.fault_injection import FaultInjector
from medevac.monitor.protocol import Checks, host_key


class LabProbes:
    """The agent's local checks in the lab: read from the fault model."""

    def __init__(self, faults: FaultInjector, host: str) -> None:
        self._faults = faults
        self._host = host

    def checks(self) -> Checks:
        return self._faults.probe(self._host)


class LabAgents:
    """Agents that heartbeat to every controller's port, started and stopped as the
    fault model says each host's OS runs (and muted while the host is cut off). Each
    signs with its host's own key, derived from the controller's master key, as
    'medevac agent-key' provisions a real host."""

    def __init__(
        self, faults: FaultInjector, heartbeat_ports: list[int], master_key: bytes
    ) -> None:
        self._faults = faults
        self._controllers = tuple(("127.0.0.1", port) for port in heartbeat_ports)
        self._master_key = master_key
        self.agents: dict[str, tuple[Agent, asyncio.Task[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """On the event loop the agents run on."""
        self._loop = asyncio.get_running_loop()
        self._sync()

    def changed(self) -> None:
        """From any thread: the fault model changed; agents follow on the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._sync)

    def _sync(self) -> None:
        """On the event loop: an agent runs on every host whose OS runs; muted when cut off."""
        faults = self._faults
        for name, host in faults.hosts.items():
            with faults.model_lock:
                alive, muted, boots = host.os_running, host.partitioned, host.boots
            current = self.agents.get(name)
            if current is not None and (not alive or current[0].boot != boots):
                current[1].cancel()  # the OS died (or rebooted): so did its agent
                del self.agents[name]
                current = None
            if alive and current is None:
                agent = Agent(
                    AgentConfig(
                        host=name,
                        controllers=self._controllers,
                        key=host_key(self._master_key, name),
                        bind=("127.0.0.1", 0),
                        restart_compute=functools.partial(faults.restart_compute, name),
                    ),
                    LabProbes(faults, name),
                )
                agent.boot = boots
                self.agents[name] = (agent, asyncio.ensure_future(agent.run()))
            if name in self.agents:
                self.agents[name][0].muted = muted

    def stop(self) -> None:
        for _, task in self.agents.values():
            task.cancel()
