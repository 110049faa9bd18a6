"""The lab's compute hosts (lab Nova service): each a nova-compute service on its own
fake hypervisor, and what the control API does to them and to their domains.

The semantics of each operation are in nova_service's docstring.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from nova_control_api import HttpError
from nova_heartbeat import Heartbeat

LOG = logging.getLogger("lab.nova_service")


@dataclass
class Compute:
    service: Any  # the running nova-compute service (the last one started)
    driver: Any  # its fake hypervisor, which outlives any one service
    running: bool = True
    alive: bool = True  # the domains run


class Computes:
    def __init__(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat
        self.case: Any = None  # Nova's functional-test case, once started
        self.hosts: dict[str, Compute] = {}
        self.lock = threading.RLock()  # serialises control operations

    def start(self, case: Any, hosts: list[str]) -> None:
        self.case = case
        for host in hosts:
            svc = case._start_compute(host)
            self.hosts[host] = Compute(service=svc, driver=svc.manager.driver)

    # -- views -------------------------------------------------------------------
    def hosts_state(self) -> dict[str, Any]:
        return {
            "hosts": {
                h: {"compute_running": st.running, "domains_alive": st.alive}
                for h, st in self.hosts.items()
            }
        }

    def domains(self) -> dict[str, list[str]]:
        from nova.compute import power_state

        out = {}
        for h, st in self.hosts.items():
            insts = dict(st.driver.instances)
            out[h] = sorted(u for u, i in insts.items() if i.state == power_state.RUNNING)
        return out

    def all_domains(self) -> dict[str, dict[str, str]]:
        from nova.compute import power_state

        names = power_state.STATE_MAP
        return {
            h: {u: names.get(i.state, str(i.state)) for u, i in dict(st.driver.instances).items()}
            for h, st in self.hosts.items()
        }

    # -- helpers -----------------------------------------------------------------
    def _host(self, host: str) -> Compute:
        if host not in self.hosts:
            raise HttpError(404, f"unknown host {host}")
        return self.hosts[host]

    def _cell_ctx(self) -> Any:
        from nova import context

        ctx = context.get_admin_context()
        context.set_target_cell(ctx, self.case.cell_mappings["cell1"])
        return ctx

    def _instance(self, uuid: str) -> Any:
        from nova import exception, objects

        if not re.match(r"^[0-9a-fA-F-]{32,36}$", uuid):
            raise HttpError(404, f"unknown server {uuid}")
        try:
            return objects.Instance.get_by_uuid(self._cell_ctx(), uuid)
        except exception.InstanceNotFound:
            raise HttpError(404, f"unknown server {uuid}") from None

    @staticmethod
    def _set_domains(st: Compute, state: int) -> None:
        for inst in list(st.driver.instances.values()):
            inst.state = state

    # -- host faults -------------------------------------------------------------
    def power_cut(self, host: str) -> dict[str, Any]:
        """A BMC's power off: the domains die at that instant, before its answer.
        Without the lock: a host stop holding it takes a second or more, and the
        BMC must answer at once (stopping nova-compute follows in the background)."""
        from nova.compute import power_state

        st = self._host(host)
        self._set_domains(st, power_state.SHUTDOWN)
        st.alive = False
        return {"host": host, "domains_alive": False}

    def stop_host(self, host: str, body: dict[str, Any]) -> dict[str, Any]:
        mode = body.get("domains", "destroy")
        if mode not in ("destroy", "keep"):
            raise HttpError(400, 'domains must be "destroy" or "keep"')
        with self.lock:
            st = self._host(host)
            if mode == "destroy":  # a power loss: the domains die first, not after
                self.power_cut(host)
            if st.running:
                svc = st.service
                self.heartbeat.unregister(svc)
                st.running = False
                t0 = time.monotonic()
                svc.stop()
                LOG.info("compute %s stopped in %.2fs", host, time.monotonic() - t0)
            return {"host": host, "compute_running": st.running, "domains_alive": st.alive}

    def start_host(self, host: str, body: dict[str, Any]) -> dict[str, Any]:
        from unittest import mock

        from nova.compute import power_state

        alive = body.get("domains_alive")
        if alive is not None and not isinstance(alive, bool):
            raise HttpError(400, "domains_alive must be a boolean")
        with self.lock:
            st = self._host(host)
            if st.running:
                raise HttpError(409, f"compute on {host} is already running")
            if alive is None:
                alive = st.alive
            self._set_domains(st, power_state.RUNNING if alive else power_state.SHUTDOWN)
            st.alive = alive
            case = self.case
            cell_name = case.host_mappings[host].cell_mapping.name
            t0 = time.monotonic()
            with mock.patch("nova.virt.driver.load_compute_driver") as load:
                load.return_value = st.driver
                svc = case.start_service("compute", host=host, cell_name=cell_name)
            case.computes[host] = svc
            st.service = svc
            st.running = True
            LOG.info("compute %s restarted in %.2fs", host, time.monotonic() - t0)
            if not alive:
                self._sync_host(st)
            return {"host": host, "compute_running": True, "domains_alive": alive}

    def _sync_instance(self, st: Compute, instance: Any) -> None:
        from nova import utils

        manager = st.service.manager
        ctx = self._cell_ctx()

        @utils.synchronized(instance.uuid)  # type: ignore[untyped-decorator]
        def query_driver_power_state_and_sync() -> None:
            manager._query_driver_power_state_and_sync(ctx, instance)

        query_driver_power_state_and_sync()

    def _sync_host(self, st: Compute) -> None:
        from nova import objects

        insts = objects.InstanceList.get_by_host(
            self._cell_ctx(), st.service.host, expected_attrs=[]
        )
        for inst in insts:
            try:
                self._sync_instance(st, inst)
            except Exception:
                LOG.exception("power sync of %s failed", inst.uuid)

    # -- server faults -----------------------------------------------------------
    def _server_host(self, uuid: str) -> tuple[Any, str, Compute]:
        inst = self._instance(uuid)
        for h, st in self.hosts.items():
            if uuid in st.driver.instances and (inst.host == h):
                return inst, h, st
        for h, st in self.hosts.items():
            if uuid in st.driver.instances:
                return inst, h, st
        raise HttpError(409, f"server {uuid} has no domain on any lab host")

    def crash_server(self, uuid: str) -> dict[str, Any]:
        from nova.compute import power_state

        with self.lock:
            inst, h, st = self._server_host(uuid)
            st.driver.instances[uuid].state = power_state.CRASHED
            synced = False
            if st.running and inst.host == h:
                self._sync_instance(st, inst)
                synced = True
            return {"server": uuid, "host": h, "synced": synced}

    def heal_server(self, uuid: str) -> dict[str, Any]:
        from nova.compute import api as compute_api
        from nova.compute import power_state, vm_states

        with self.lock:
            inst, h, st = self._server_host(uuid)
            action = "domain-restarted"
            if (
                inst.vm_state == vm_states.STOPPED
                and inst.task_state is None
                and st.running
                and inst.host == h
            ):
                ctx = self._cell_ctx()
                compute_api.API().start(ctx, inst)
                action = "started-through-nova"
            else:
                st.driver.instances[uuid].state = power_state.RUNNING
                if st.running and inst.host == h:
                    self._sync_instance(st, inst)
            return {"server": uuid, "host": h, "action": action}
