"""The monitor's pure decisions."""

from __future__ import annotations

from medevac.monitor.correlate import check_changes, host_loss_verdict, observer_isolated
from medevac.monitor.protocol import Checks
from medevac.monitor.verdicts import VerdictKind as V


def test_only_confirmed_power_off_is_host_down() -> None:
    assert host_loss_verdict(True) is V.HOST_DOWN
    assert host_loss_verdict(False) is V.HOST_UNREACHABLE  # power on: maybe alive
    assert host_loss_verdict(None) is V.HOST_UNREACHABLE  # BMC silent: maybe alive


def test_observer_isolation_needs_a_large_share_of_a_real_zone() -> None:
    assert observer_isolated(10, 5, fraction=0.5, min_hosts=3)
    assert not observer_isolated(10, 4, fraction=0.5, min_hosts=3)
    assert not observer_isolated(2, 2, fraction=0.5, min_hosts=3)  # too small to tell
    assert not observer_isolated(3, 1, fraction=0.3, min_hosts=3)  # one host is never "most"


def test_check_changes() -> None:
    assert check_changes(None, Checks()) == []
    assert check_changes(None, Checks(compute_alive=False)) == [(V.COMPUTE_PROCESS_DOWN, None)]
    assert check_changes(Checks(compute_alive=False), Checks()) == [(V.COMPUTE_PROCESS_UP, None)]
    assert check_changes(Checks(links_down=("p1",)), Checks(links_down=("p2",))) == [
        (V.LINK_DOWN, "p2"),
        (V.LINK_UP, "p1"),
    ]
    assert check_changes(Checks(), Checks(domains_down=("s1",))) == [(V.SERVER_DOWN, "s1")]
    assert check_changes(Checks(domains_down=("s1",)), Checks(domains_down=("s1",))) == []
