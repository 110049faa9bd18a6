"""Redfish power driver (sushy), the same interface as the IPMI one: read the power
state, ``ForceOff``, ``On``.

sushy is blocking (requests), so each call runs in a worker thread under a deadline
of its own, calls on one client are serialised, and sushy's own retries on server
errors are off: the fencer decides when to ask again. sushy authenticates with a
Redfish session when the BMC offers one and falls back to basic auth. Errors name the
BMC and the reason, never the credentials.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass, field
from typing import Any

import sushy
import sushy.auth
from sushy import exceptions as sushy_exceptions

from medevac.bmc.ipmi import BmcAuthError, BmcError, BmcUnreachable, PowerState


@dataclass(frozen=True)
class RedfishTarget:
    url: str  # the BMC's base URL: https://10.0.0.5 (the service root is /redfish/v1/)
    username: str
    password: str = field(repr=False)
    system: str | None = None  # the ComputerSystem id; None: the BMC's only system
    verify: bool | str = True  # TLS: verify, or a CA bundle path


class RedfishClient:
    """``executor`` runs the blocking sushy calls; by default asyncio's default executor."""

    def __init__(
        self,
        target: RedfishTarget,
        timeout: float = 3.0,
        *,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._timeout = timeout
        self._executor = executor
        self._conn: Any = None
        self._system_path: str | None = None
        self._thread_lock = threading.Lock()
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"RedfishClient({self._target.url}, user={self._target.username!r})"

    async def power_state(self) -> PowerState:
        state = await self._call("get power state", self._read_power)
        if state == sushy.PowerState.OFF:
            return PowerState.OFF
        if state in (sushy.PowerState.ON, sushy.PowerState.POWERING_OFF):
            return PowerState.ON  # still on until it says off
        raise BmcError(f"Redfish {self._target.url}: unexpected power state {state!r}")

    async def power_off(self) -> None:
        """``ForceOff``; returns once the BMC accepted it (no waiting)."""
        await self._call("power off", lambda: self._reset(sushy.ResetType.FORCE_OFF))

    async def power_on(self) -> None:
        await self._call("power on", lambda: self._reset(sushy.ResetType.ON))

    async def close(self) -> None:
        with self._thread_lock:
            self._conn = None

    # -- internals (worker threads) -----------------------------------------------

    def _system(self) -> Any:
        if self._conn is None:
            self._conn = sushy.Sushy(
                self._target.url,
                auth=sushy.auth.BasicAuth(self._target.username, self._target.password),
                verify=self._target.verify,
                # One attempt: sushy reads 0 as "its default of 3, 2 s apart".
                server_side_retries=1,
                server_side_retries_delay=0.1,
                read_timeout=self._timeout,
                connect_timeout=self._timeout,
            )
            self._system_path = None
        if self._system_path is None:
            if self._target.system:
                self._system_path = (
                    f"{self._conn.get_system_collection().path}/{self._target.system}"
                )
            else:
                members = self._conn.get_system_collection().members_identities
                if len(members) != 1:
                    raise BmcError(
                        f"Redfish {self._target.url}: {len(members)} systems; "
                        "configure which one (redfish_system)"
                    )
                self._system_path = members[0]
        return self._conn.get_system(self._system_path)

    def _read_power(self) -> Any:
        return self._system().power_state

    def _reset(self, kind: Any) -> None:
        self._system().reset_system(kind)

    async def _call(self, operation: str, action: Any) -> Any:
        if self._lock is None:
            self._lock = asyncio.Lock()
        where = f"Redfish {self._target.url}: {operation}"

        def run() -> Any:
            with self._thread_lock:
                try:
                    return action()
                except BmcError:
                    raise
                except sushy_exceptions.AccessError as exc:
                    self._conn = None
                    if exc.status_code in (401, 403):
                        raise BmcAuthError(f"{where}: credentials refused") from None
                    raise BmcError(f"{where}: HTTP {exc.status_code}") from None
                except sushy_exceptions.HTTPError as exc:
                    self._conn = None
                    raise BmcError(f"{where}: HTTP {exc.status_code}") from None
                except sushy_exceptions.ConnectionError:
                    self._conn = None
                    raise BmcUnreachable(f"{where}: no answer") from None
                except sushy_exceptions.SushyError as exc:
                    self._conn = None
                    raise BmcError(f"{where}: {type(exc).__name__}") from None

        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                return await asyncio.wait_for(
                    loop.run_in_executor(self._executor, run), self._timeout
                )
            except TimeoutError:
                raise BmcUnreachable(f"{where}: no answer within {self._timeout:g} s") from None
