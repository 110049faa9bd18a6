"""IPMI 2.0 (lanplus) power driver, used for fencing and power confirmation.

pyghmi is blocking, so every call runs in a worker thread under a deadline of
its own.  A BMC that does not answer holds that thread much longer than the
deadline: pyghmi gives up on a login after 4.5 to 6 s, and on a session it had
logged in only after about 28 s (it sends the request again for about 9 s, then
logs in again and re-sends it for about 19 s more), answering late if the BMC
comes back meanwhile.  That cannot be shortened from outside: with pyghmi's
re-login turned off, giving up on a logged-in session logs it out while holding
pyghmi's process-wide session lock for about a second, stalling every other BMC.
So a call whose caller gave up while its thread is still inside pyghmi is
*abandoned*, and:

* a power change (off, on) never overtakes an earlier one: it waits, within its
  own deadline, until the last abandoned change is over (IPMI gives no way to
  recall a request, and pyghmi may still send it);
* a power read has no effect, so it does not wait for abandoned calls: it goes
  over a session of its own, and answers as soon as the BMC does again;
* at most two threads per client: a call that finds two abandoned calls still
  in pyghmi waits, within its deadline, for one to end.

Every ``Command`` has a pyghmi session of its own: pyghmi shares one session per
(BMC, user) in the process unless the Kg differs, so the client gives the
password (the Kg IPMI uses when none is set) as bytes that equal only
themselves.  Without that, a new ``Command`` joins the stuck session and waits
for it.  One ``Command`` is kept per client and reused; after any failure or
abandonment it is dropped (logged out by its own thread once that is done with
it) and the next call logs in again.

pyghmi 1.6 takes its two session-table locks in opposite orders on different
paths (a retry timer holds the waiting-sessions lock and sends, which takes the
keepalive lock; a send holds the keepalive lock and registers its retry, which
takes the waiting-sessions lock).  Under concurrent calls that deadlocks every
IPMI call of the process.  Importing this module makes both names one
re-entrant lock, which leaves each path's locking as it was but removes the
lock-order inversion.  It also keeps pyghmi from sleeping through an answer
already queued for the waiting session (see ``_wake_on_queued_answers``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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

_awaiting = threading.local()  # the pyghmi session this thread waits an answer for


def _wake_on_queued_answers() -> None:
    """pyghmi's wait for an answer can miss it: the answer may be read off the
    socket and queued for the session before the waiting thread registers with
    pyghmi's I/O thread, which then wakes it only at its retry timer (0.5 to 1 s
    later) whenever another session's timer is due sooner.  So a thread that
    waits for an answer already queued for its session does not sleep."""
    session_class = pyghmi_session.Session
    if getattr(session_class.awaitresponse, "_medevac", False):
        return
    io_wait = pyghmi_session._io_wait
    awaitresponse = session_class.awaitresponse

    def wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
        session = getattr(_awaiting, "session", None)
        if session is not None and session.pktqueue:
            return
        io_wait(timeout, myaddr, evq)

    def awaiting(self: Any, retry: Any, netfn: Any, command: Any) -> Any:
        _awaiting.session = self
        try:
            return awaitresponse(self, retry, netfn, command)
        finally:
            _awaiting.session = None

    awaiting._medevac = True  # type: ignore[attr-defined]
    pyghmi_session._io_wait = wait
    session_class.awaitresponse = awaiting


_wake_on_queued_answers()

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


class _SessionKey(bytes):
    """The Kg given to pyghmi: the password's bytes, equal only to themselves, so
    that pyghmi never hands this ``Command``'s session to another one."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return id(self)


# Threads one client may hold: the call in flight plus one abandoned call.
_THREADS_PER_CLIENT = 2


class _Abandon:
    """Tells a worker thread that its caller gave up on it."""

    def __init__(self) -> None:
        self.abandoned = False


class IpmiClient:
    """Async power control of one BMC over IPMI lanplus.

    Calls on one client are serialised; each has its own deadline (``timeout``
    seconds, login included).  A call abandoned at its deadline may still be in
    pyghmi: a later power change waits for an abandoned power change, a power
    read waits for neither (see the module docstring).  ``executor`` runs the
    blocking pyghmi calls; by default asyncio's default executor.
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
        self._threads: asyncio.Semaphore | None = None
        self._pending_change: asyncio.Future[Any] | None = None
        self._closed = False

    @property
    def target(self) -> IpmiTarget:
        return self._target

    def __repr__(self) -> str:
        return f"IpmiClient({self._target.endpoint}, user={self._target.username!r})"

    async def power_state(self) -> PowerState:
        state = await self._call("get power state", _get_power, changes_power=False)
        try:
            return PowerState(state)
        except ValueError:
            raise BmcError(
                f"IPMI {self._target.endpoint}: get power state: unexpected state {state!r}"
            ) from None

    async def power_off(self) -> None:
        """Hard power off; returns once the BMC accepted the request (no waiting)."""
        await self._call("power off", functools.partial(_set_power, "off"), changes_power=True)

    async def power_on(self) -> None:
        """Power on; returns once the BMC accepted the request (no waiting)."""
        await self._call("power on", functools.partial(_set_power, "on"), changes_power=True)

    async def close(self) -> None:
        """Forget the session.

        No IPMI logout here: it would block the event loop on the network.
        pyghmi stops keeping an unused session alive and the BMC reaps it.
        """
        self._closed = True
        with self._command_lock:
            self._command = None

    # -- internals -----------------------------------------------------------

    async def _call(
        self, operation: str, action: Callable[[Any], _T], *, changes_power: bool
    ) -> _T:
        endpoint = self._target.endpoint
        if self._closed:
            raise BmcError(f"IPMI {endpoint}: {operation}: client is closed")
        if self._lock is None or self._threads is None:
            self._lock = asyncio.Lock()
            self._threads = asyncio.Semaphore(_THREADS_PER_CLIENT)
        lock, threads = self._lock, self._threads
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        pending = f"no answer within {self._timeout:g} s (an earlier request is still pending)"
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError:
            raise BmcUnreachable(f"IPMI {endpoint}: {operation}: {pending}") from None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    change = self._pending_change
                    if changes_power and change is not None:
                        # Never overtake an abandoned power change: its request
                        # may still reach the BMC.
                        await asyncio.wait([change])
                        self._pending_change = None
                    await threads.acquire()
            except TimeoutError:
                raise BmcUnreachable(f"IPMI {endpoint}: {operation}: {pending}") from None
            abandon = _Abandon()
            future = loop.run_in_executor(
                self._executor, self._run_blocking, operation, action, abandon
            )
            try:
                async with asyncio.timeout_at(deadline):
                    return await asyncio.shield(future)
            except TimeoutError:
                raise BmcUnreachable(
                    f"IPMI {endpoint}: {operation}: no answer within {self._timeout:g} s"
                ) from None
            finally:
                if future.done():
                    threads.release()
                else:
                    # The worker thread is still inside pyghmi: its session is not
                    # reused, and a power change waits for it (see _pending_change).
                    self._abandon(abandon)
                    future.add_done_callback(functools.partial(_release_when_done, threads))
                    if changes_power:
                        self._pending_change = future
        finally:
            lock.release()

    def _run_blocking(self, operation: str, action: Callable[[Any], _T], abandon: _Abandon) -> _T:
        """Runs in a worker thread."""
        endpoint = self._target.endpoint
        command: Any = None
        try:
            command = self._get_command(abandon)
            return action(command)
        except BmcError:
            self._drop_command(command)
            raise
        except pyghmi_exceptions.IpmiException as exc:
            self._drop_command(command)
            raise _classify(endpoint, operation, exc) from None
        except OSError as exc:
            self._drop_command(command)
            raise BmcUnreachable(f"IPMI {endpoint}: {operation}: {exc.strerror or exc}") from None
        except Exception as exc:
            self._drop_command(command)
            raise BmcError(
                f"IPMI {endpoint}: {operation}: unexpected {type(exc).__name__}"
            ) from exc
        finally:
            with self._command_lock:
                abandoned = abandon.abandoned
            if abandoned and command is not None:
                _logout(command)  # nobody else holds this session: end it on the BMC

    def _get_command(self, abandon: _Abandon) -> Any:
        with self._command_lock:
            command = self._command
        if command is not None and not command.ipmi_session.broken:
            return command
        target = self._target
        password = target.password.encode("utf-8")
        # Credentials as bytes: pyghmi keys its sessions by the values given here
        # but compares them with its own utf-8 encoded copies, so with str a second
        # Command to the same BMC waits forever for a login that is not happening.
        command = pyghmi_command.Command(
            bmc=target.address,
            userid=target.username.encode("utf-8"),
            password=password,
            port=target.port,
            kg=_SessionKey(password),
        )
        with self._command_lock:
            if not self._closed and not abandon.abandoned:
                self._command = command
        return command

    def _abandon(self, abandon: _Abandon) -> None:
        with self._command_lock:
            abandon.abandoned = True
            self._command = None

    def _drop_command(self, command: Any) -> None:
        with self._command_lock:
            if command is None or self._command is command:
                self._command = None
        if command is not None:
            _logout(command)


def _logout(command: Any) -> None:
    """End a dropped ``Command``'s session (in the thread that used it last)."""
    session = command.ipmi_session
    if session.logged and not session.broken:
        # A BMC that does not answer reaps the session itself.
        with contextlib.suppress(Exception):
            session.logout()


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


def _release_when_done(threads: asyncio.Semaphore, future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: the caller has already been told
    threads.release()
