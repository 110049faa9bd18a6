"""`medevac serve` and `medevac agent` run without loading any lab module.

Each command runs as a real process through ``python -m medevac``; at exit the process
reports which lab modules it had imported.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import serve_config, wait_healthy

MARK = "lab modules loaded: "
# Runs `python -m medevac ARGS...` and, at exit, prints the lab modules it imported.
PROBE = f"""
import atexit, json, runpy, sys

def report():
    lab = [m for m in sys.modules if m in ("medevac.lab", "medevac.cli.lab")
           or m.startswith("medevac.lab.")]
    print({MARK!r} + json.dumps(sorted(lab)), file=sys.stderr, flush=True)

atexit.register(report)
runpy.run_module("medevac", run_name="__main__", alter_sys=True)
"""


def medevac(*args: str) -> list[str]:
    return [sys.executable, "-c", PROBE, *args]


def lab_modules(stderr: str) -> list[str]:
    reports = [line for line in stderr.splitlines() if line.startswith(MARK)]
    assert len(reports) == 1, stderr
    found: list[str] = json.loads(reports[0].removeprefix(MARK))
    return found


def test_serve_loads_no_lab_module(tmp_path: Path) -> None:
    config, port = serve_config(tmp_path)
    proc = subprocess.Popen(
        medevac("serve", "--config", str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=20)[1]
    assert proc.returncode == 0, stderr
    assert lab_modules(stderr) == []


def test_agent_loads_no_lab_module(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("z" * 32)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        args = ["--host", "compute-1", "--controller", f"127.0.0.1:{s.getsockname()[1]}"]
        proc = subprocess.Popen(
            medevac("agent", *args, "--key-file", str(key)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            s.recv(2048)  # the agent is running: it sent a heartbeat
        finally:
            proc.send_signal(signal.SIGINT)
            stderr = proc.communicate(timeout=20)[1]
    assert proc.returncode == 0, stderr
    assert lab_modules(stderr) == []


def test_the_lab_commands_are_listed_and_load_the_lab_when_run() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    listed = subprocess.run(medevac("--help"), capture_output=True, text=True, timeout=30, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "The lab: real Nova + Neutron" in listed.stdout
    assert "The main job: a lab, medevac on it" in listed.stdout
    assert lab_modules(listed.stderr) == []

    lab_help = subprocess.run(
        medevac("lab", "--help"), capture_output=True, text=True, timeout=30, env=env
    )
    assert lab_help.returncode == 0, lab_help.stderr
    assert "inject" in lab_help.stdout and "status" in lab_help.stdout
    assert "medevac.lab.client" in lab_modules(lab_help.stderr)


def test_a_mistyped_command_is_matched_against_the_lab_commands_too() -> None:
    typo = subprocess.run(medevac("dmeo"), capture_output=True, text=True, timeout=30)
    assert typo.returncode == 2
    assert "Did you mean 'demo'?" in typo.stderr
