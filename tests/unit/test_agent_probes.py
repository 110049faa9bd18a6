"""The agent's local checks: nova-compute found in /proc, and while it is not running
/proc is scanned at most once a second, so the heartbeats are never delayed by it."""

from __future__ import annotations

from pathlib import Path

from medevac.agent.probes import HostProbes


def process(proc: Path, pid: int, cmdline: bytes) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "cmdline").write_bytes(cmdline)


def test_nova_compute_is_found_and_its_pid_kept(tmp_path: Path) -> None:
    process(tmp_path, 10, b"/usr/bin/python3\0/usr/bin/nova-compute\0")
    probes = HostProbes(proc=tmp_path, sysfs_net=tmp_path)
    assert probes.checks().compute_alive
    (tmp_path / "self").mkdir()  # not a pid: ignored
    assert probes.checks().compute_alive


def test_while_it_is_not_running_proc_is_scanned_once_a_second(tmp_path: Path) -> None:
    process(tmp_path, 10, b"sshd\0")
    probes = HostProbes(proc=tmp_path, sysfs_net=tmp_path)
    assert not probes.checks().compute_alive  # scanned
    process(tmp_path, 11, b"nova-compute\0")
    assert not probes.checks().compute_alive  # not scanned again so soon
    probes._next_scan = 0.0  # a second later
    assert probes.checks().compute_alive
