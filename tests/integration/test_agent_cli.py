"""`medevac agent` refuses bad arguments clearly, and its heartbeats verify; the key
`medevac agent-key` derives for a host is the one the monitor checks that host with."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from medevac.monitor.protocol import DatagramKind, HostKeys, decode, decode_signed


def agent(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medevac", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_short_or_missing_key_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "k"
    short.write_text("abc")
    r = agent("--host", "h1", "--controller", "127.0.0.1:9", "--key-file", str(short))
    assert r.returncode == 1 and "at least 16 bytes" in r.stderr
    r = agent("--host", "h1", "--controller", "127.0.0.1:9", "--key-file", str(tmp_path / "no"))
    assert r.returncode == 1 and "No such file" in r.stderr


def test_bad_controller_address_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("x" * 32)
    r = agent("--host", "h1", "--controller", "nowhere", "--key-file", str(key))
    assert r.returncode == 1 and "expected HOST:PORT" in r.stderr


def medevac(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medevac", *args], capture_output=True, text=True, timeout=20
    )


def controller_config(tmp_path: Path, master: bytes, hosts: tuple[str, ...] = ()) -> Path:
    (tmp_path / "master.key").write_bytes(master + b"\n")
    config = tmp_path / "medevac.toml"
    lines = [f'agent_key_file = "{tmp_path / "master.key"}"']
    for h in hosts:
        lines += [f'[hosts."{h}"]', 'bmc_address = "127.0.0.1"']
    config.write_text("\n".join(lines) + "\n")
    return config


def test_the_derived_key_signs_heartbeats_the_monitor_takes_as_the_hosts_own(
    tmp_path: Path,
) -> None:
    master = b"m" * 32
    config = controller_config(tmp_path, master, ("compute-7",))
    key_file = tmp_path / "compute-7.key"
    r = medevac("agent-key", "compute-7", "--config", str(config), "--output", str(key_file))
    assert r.returncode == 0, r.stderr
    assert master.decode() not in r.stdout and key_file.stat().st_mode & 0o077 == 0
    printed = medevac("agent-key", "compute-7", "--config", str(config))
    assert printed.stdout.strip() == key_file.read_text().strip()
    keys = HostKeys(master, ["compute-7"])
    for d in heartbeats(key_file, "compute-7", 2):
        verified, key = decode_signed(d, keys.candidates)
        assert verified.host == "compute-7"
        assert key == keys.for_host("compute-7") and not keys.is_master(key)


def test_agent_key_refuses_a_host_the_configuration_does_not_list(tmp_path: Path) -> None:
    config = controller_config(tmp_path, b"m" * 32, ("compute-7",))
    r = medevac("agent-key", "compute-8", "--config", str(config))
    assert r.returncode == 1 and "not in the configuration" in r.stderr and not r.stdout


def heartbeats(key: Path, host: str, count: int) -> list[bytes]:
    """The first ``count`` datagrams a real `medevac agent` sends, unverified."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        port = s.getsockname()[1]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medevac",
                "agent",
                "--host",
                host,
                "--controller",
                f"127.0.0.1:{port}",
                "--key-file",
                str(key),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return [s.recv(2048) for _ in range(count)]
        finally:
            proc.terminate()
            proc.wait(10)


def test_agent_sends_signed_heartbeats(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("y" * 32 + "\n")
    seqs = []
    for data in heartbeats(key, "compute-7", 6):
        d = decode(data, b"y" * 32)
        assert d.host == "compute-7" and d.kind is DatagramKind.HEARTBEAT
        seqs.append(d.seq)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3  # each heartbeat sent twice
