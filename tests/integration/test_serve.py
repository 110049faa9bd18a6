"""`medevac serve` as a real process: migrates, serves on loopback, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, serve_config, wait_healthy


def test_serve_runs_migrates_and_stops_cleanly(tmp_path: Path) -> None:
    config, port = serve_config(tmp_path)
    env = {**os.environ, "MEDEVAC_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medevac", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(port)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/whoami").status_code == 401
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "waiting": []}
        me = httpx.get(f"{base}/v1/whoami", headers={"X-Auth-Token": ADMIN_TOKEN})
        assert me.json()["name"] == "ops"
        assert (tmp_path / "c.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert ADMIN_TOKEN not in output


def test_serve_with_invalid_config_exits_with_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[api]\nport = 99999\n")
    result = subprocess.run(
        [sys.executable, "-m", "medevac", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "api.port" in result.stderr


def test_the_cli_fails_over_to_the_next_controller(tmp_path: Path) -> None:
    config, port = serve_config(tmp_path)
    env = {**os.environ, "MEDEVAC_CONFIG": str(config), "MEDEVAC_TOKEN": ADMIN_TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "medevac", "serve"], env=env)
    dead = "http://127.0.0.1:9"  # nothing listens there

    def cli(url: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "medevac", "hosts", "--json", "--url", url]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    try:
        wait_healthy(port)
        both = cli(f"{dead},http://127.0.0.1:{port}")
        assert both.returncode == 0, both.stderr
        assert "hosts" in json.loads(both.stdout)
        alone = cli(dead)
        assert alone.returncode == 1 and "cannot reach the controller: http://127.0.0.1:9" in (
            alone.stderr
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
