"""IPMI 2.0 (lanplus) power driver, used for fencing and power confirmation.

pyghmi is blocking, so every call runs in a worker thread under a deadline of
its own: a BMC that does not answer makes pyghmi give up only after about
4.7 s, and a fencing decision must not wait for that.

One pyghmi ``Command`` is kept per client and reused: pyghmi shares one session
per (BMC, user) in the process, and logging out makes the next ``Command`` to
the same BMC reuse the dead session.  After any failure the ``Command`` is
dropped and the next call logs in again.

pyghmi 1.6 takes its two session-table locks in opposite orders on different
paths (a retry timer holds the waiting-sessions lock and sends, which takes the
keepalive lock; a send holds the keepalive lock and registers its retry, which
takes the waiting-sessions lock).  Under concurrent calls that deadlocks every
IPMI call of the process.  Importing this module makes both names one
re-entrant lock, which leaves each path's locking as it was but removes the
lock-order inversion.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyghmi.exceptions as pyghmi_exceptions
import pyghmi.ipmi.command as pyghmi_command
import pyghmi.ipmi.private.session as pyghmi_session

__all__ = [
    "BmcAuthError",
    "BmcError",
    "BmcUnreachable",
    "IpmiClient",
    "IpmiTarget",
    "PowerState",
]

_T = TypeVar("_T")


def _merge_pyghmi_session_locks() -> None:
    if pyghmi_session.KEEPALIVE_SESSIONS is not pyghmi_session.WAITING_SESSIONS:
        shared = threading.RLock()
        pyghmi_session.KEEPALIVE_SESSIONS = shared
        pyghmi_session.WAITING_SESSIONS = shared


_merge_pyghmi_session_locks()

# Words in pyghmi's login errors that mean the BMC refused the credentials.
_AUTH_MARKERS = (
    "incorrect password",
    "unauthorized name",
    "unauthorized role",
    "invalid role",
    "invalid integrity check",
    "unauthorized guid",
    "rakp",
)
# Words that mean the BMC did not answer (pyghmi says 'None' when a login times out).
_UNREACHABLE_MARKERS = (
    "timeout",
    "timed out",
    "session no longer connected",
    "unable to transmit",
    "session failed to initialize",
)


class PowerState(enum.Enum):
    ON = "on"
    OFF = "off"


class BmcError(Exception):
    """An IPMI call failed; the message names host:port and the reason."""


class BmcUnreachable(BmcError):
    """The BMC did not answer within the deadline."""


class BmcAuthError(BmcError):
    """The BMC refused the user name or password."""


@dataclass(frozen=True)
class IpmiTarget:
    address: str
    port: int
    username: str
    password: str = field(repr=False)

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


class IpmiClient:
    """Async power control of one BMC over IPMI lanplus.

    Calls on one client are serialised; each has its own deadline (``timeout``
    seconds, login included).  ``executor`` runs the blocking pyghmi calls;
    by default asyncio's default executor.
    """

    def __init__(
        self,
        target: IpmiTarget,
        timeout: float = 3.0,
        *,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._timeout = timeout
        self._executor = executor
        self._command: Any = None
        self._command_lock = threading.Lock()
        self._lock: asyncio.Lock | None = None
        self._closed = False

    @property
    def target(self) -> IpmiTarget:
        return self._target

    def __repr__(self) -> str:
        return f"IpmiClient({self._target.endpoint}, user={self._target.username!r})"

    async def power_state(self) -> PowerState:
        state = await self._call("get power state", _get_power)
        try:
            return PowerState(state)
        except ValueError:
            raise BmcError(
                f"IPMI {self._target.endpoint}: get power state: unexpected state {state!r}"
            ) from None

    async def power_off(self) -> None:
        """Hard power off; returns once the BMC accepted the request (no waiting)."""
        await self._call("power off", functools.partial(_set_power, "off"))

    async def power_on(self) -> None:
        """Power on; returns once the BMC accepted the request (no waiting)."""
        await self._call("power on", functools.partial(_set_power, "on"))

    async def close(self) -> None:
        """Forget the session.

        No IPMI logout on purpose: a later client to the same BMC in this
        process would pick up the logged-out session and fail.  pyghmi stops
        keeping an unused session alive and the BMC reaps it.
        """
        self._closed = True
        with self._command_lock:
            self._command = None

    # -- internals -----------------------------------------------------------

    async def _call(self, operation: str, action: Callable[[Any], _T]) -> _T:
        endpoint = self._target.endpoint
        if self._closed:
            raise BmcError(f"IPMI {endpoint}: {operation}: client is closed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        lock = self._lock
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError:
            raise BmcUnreachable(
                f"IPMI {endpoint}: {operation}: no answer within {self._timeout:g} s "
                "(an earlier request is still pending)"
            ) from None
        future = loop.run_in_executor(self._executor, self._run_blocking, operation, action)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            raise BmcUnreachable(
                f"IPMI {endpoint}: {operation}: no answer within {self._timeout:g} s"
            ) from None
        finally:
            if future.done():
                lock.release()
            else:
                # The worker thread is still inside pyghmi and its request may
                # still reach the BMC: later calls on this client wait for it,
                # so that they cannot overtake it, and its session is not reused.
                self._drop_command()
                future.add_done_callback(functools.partial(_release_when_done, lock))

    def _run_blocking(self, operation: str, action: Callable[[Any], _T]) -> _T:
        """Runs in a worker thread."""
        endpoint = self._target.endpoint
        try:
            command = self._get_command()
            return action(command)
        except BmcError:
            self._drop_command()
            raise
        except pyghmi_exceptions.IpmiException as exc:
            self._drop_command()
            raise _classify(endpoint, operation, exc) from None
        except OSError as exc:
            self._drop_command()
            raise BmcUnreachable(f"IPMI {endpoint}: {operation}: {exc.strerror or exc}") from None
        except Exception as exc:
            self._drop_command()
            raise BmcError(
                f"IPMI {endpoint}: {operation}: unexpected {type(exc).__name__}"
            ) from exc

    def _get_command(self) -> Any:
        with self._command_lock:
            command = self._command
        if command is not None and not command.ipmi_session.broken:
            return command
        target = self._target
        # Credentials as bytes: pyghmi keys its shared sessions by the values
        # given here but compares them with its own utf-8 encoded copies, so
        # with str a second Command to the same BMC waits forever for a login
        # that is not happening.
        command = pyghmi_command.Command(
            bmc=target.address,
            userid=target.username.encode("utf-8"),
            password=target.password.encode("utf-8"),
            port=target.port,
        )
        with self._command_lock:
            if not self._closed:
                self._command = command
        return command

    def _drop_command(self) -> None:
        with self._command_lock:
            self._command = None


def _get_power(command: Any) -> str:
    return str(command.get_power()["powerstate"])


def _set_power(state: str, command: Any) -> None:
    result = command.set_power(state, wait=False)
    if isinstance(result, dict) and result.get("error"):
        raise pyghmi_exceptions.IpmiException(str(result["error"]))


def _classify(endpoint: str, operation: str, exc: Exception) -> BmcError:
    reason = str(exc).strip()
    lowered = reason.lower()
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return BmcAuthError(f"IPMI {endpoint}: {operation}: authentication refused ({reason})")
    if lowered in ("", "none") or any(marker in lowered for marker in _UNREACHABLE_MARKERS):
        return BmcUnreachable(f"IPMI {endpoint}: {operation}: no answer from the BMC")
    return BmcError(f"IPMI {endpoint}: {operation}: {reason}")


def _release_when_done(lock: asyncio.Lock, future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: the caller has already been told
    lock.release()
