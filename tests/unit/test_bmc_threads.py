"""The BMC calls' threads: an executor like any other, except that a call still
blocked when the process exits does not hold the exit up."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from medevac.bmc.threads import DaemonThreads


def test_calls_run_and_their_results_and_errors_come_back() -> None:
    pool = DaemonThreads(2)
    assert pool.submit(lambda a, b: a + b, 2, b=3).result(5) == 5
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    pool.shutdown()


def test_no_more_threads_than_asked_and_idle_ones_are_reused() -> None:
    pool = DaemonThreads(2)
    gate = threading.Event()
    blocked = [pool.submit(gate.wait, 10) for _ in range(3)]  # the third waits its turn
    assert len(pool._threads) == 2 and all(t.daemon for t in pool._threads)
    gate.set()
    assert all(f.result(5) for f in blocked)
    for _ in range(5):
        pool.submit(int).result(5)
    assert len(pool._threads) == 2
    pool.shutdown()


def test_shutdown_cancels_what_has_not_started() -> None:
    pool = DaemonThreads(1)
    gate = threading.Event()
    running = pool.submit(gate.wait, 10)
    queued = pool.submit(int)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(int)
    gate.set()
    assert running.result(5)


def test_a_call_blocked_at_exit_does_not_hold_the_process() -> None:
    code = (
        "import threading\n"
        "from medevac.bmc.threads import DaemonThreads\n"
        "pool = DaemonThreads(2)\n"
        "pool.submit(threading.Event().wait)\n"  # never returns
        "pool.shutdown(wait=False, cancel_futures=True)\n"
        "print('done', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
