"""`medevac agent` refuses bad arguments clearly, and its heartbeats verify."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from medevac.monitor.protocol import DatagramKind, decode


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


def test_agent_sends_signed_heartbeats(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("y" * 32 + "\n")
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
                "compute-7",
                "--controller",
                f"127.0.0.1:{port}",
                "--key-file",
                str(key),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seqs = []
            for _ in range(6):
                d = decode(s.recv(2048), b"y" * 32)
                assert d.host == "compute-7" and d.kind is DatagramKind.HEARTBEAT
                seqs.append(d.seq)
        finally:
            proc.terminate()
            proc.wait(10)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3  # each heartbeat sent twice
