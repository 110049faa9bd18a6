"""The threads BMC calls run in: daemon threads, so that a call still waiting on a
BMC that does not answer never holds up the controller's exit (ThreadPoolExecutor
joins its threads at exit: pyghmi gives up on a silent BMC only after several
seconds). Nothing is lost by not waiting: a recovery is durable and fencing is
idempotent, so a call cut short at exit is made again by the next start."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreads(Executor):
    """At most ``max_workers`` daemon threads, started as the work needs them."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "bmc") -> None:
        self.max_workers = max_workers
        self.prefix = thread_name_prefix
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new BMC calls after shutdown")
            self._work.put((future, fn, args, kwargs))
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            elif len(self._threads) < self.max_workers:
                name = f"{self.prefix}_{len(self._threads)}"
                thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # handed to the caller, as an executor does
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1
        self._work.put(None)  # the next thread stops too

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._work.put(None)
        if wait:
            for thread in list(self._threads):
                thread.join()
