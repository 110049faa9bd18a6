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


def test_loss_evidence_shows_no_power_state_the_bmc_did_not_just_give_and_estimates_t00() -> None:
    import dataclasses

    from medevac.monitor.correlate import Sighting, loss_evidence

    seen = Sighting(
        reason="heartbeats stopped",
        silence_s=0.31234,
        confirm_s=0.0612,
        bmc_power="on",  # read ten seconds ago
        bmc_error="no answer within 60 ms (still asking)",
        nova={"state": "up"},
        nova_age_s=1.23456,
        last_heartbeat_sent_at=100.0,
        raw_received_at=100.4,
        observed_at=None,
    )
    evidence = loss_evidence(seen, phi_threshold=8.0, probes=3)
    assert evidence["bmc_power"] is None and evidence["bmc_error"].startswith("no answer")
    rounded = (evidence["silence_s"], evidence["confirm_s"], evidence["nova_age_s"])
    assert rounded == (0.312, 0.061, 1.235)
    assert evidence["fault_estimated_at"] == 100.0  # the last sign of life
    reported = dataclasses.replace(seen, observed_at=99.5, bmc_error=None)
    evidence = loss_evidence(reported, phi_threshold=8.0, probes=3)
    assert evidence["fault_estimated_at"] == 99.5 and evidence["bmc_power"] == "on"
