"""The metrics' own listener (``[metrics] listen``): `medevac serve` answers scrapers
there without a token, only from the scraper networks, while the API's /metrics
still needs one; a listen port already taken stops the start with its reason."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path

import httpx

from medevac.service.metrics import ControllerMetrics, scraper_app
from tests.conftest import ADMIN_TOKEN, free_port, serve_config, wait_healthy


def serve(tmp_path: Path, listen: str) -> tuple[subprocess.Popen[bytes], int]:
    config, port = serve_config(tmp_path)
    config.write_text(config.read_text() + f'[metrics]\nlisten = "{listen}"\n')
    env = {**os.environ, "MEDEVAC_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medevac", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, port


def test_the_scraper_listener_answers_without_a_token_and_the_api_still_wants_one(
    tmp_path: Path,
) -> None:
    scrape_port = free_port()
    proc, port = serve(tmp_path, f"127.0.0.1:{scrape_port}")
    try:
        wait_healthy(port)
        scraped = httpx.get(f"http://127.0.0.1:{scrape_port}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert "medevac_build_info{" in scraped.text
        assert httpx.get(f"http://127.0.0.1:{scrape_port}/v1/whoami").status_code == 404
        api = f"http://127.0.0.1:{port}/metrics"
        assert httpx.get(api).status_code == 401
        with_token = httpx.get(api, headers={"X-Auth-Token": ADMIN_TOKEN})
        assert with_token.status_code == 200 and "medevac_build_info{" in with_token.text
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output


def test_a_taken_listen_port_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        proc, _ = serve(tmp_path, listen)
        try:
            output = proc.communicate(timeout=30)[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode != 0
    assert "Address already in use" in output, output


def test_the_scraper_listener_refuses_peers_outside_its_networks() -> None:
    app = scraper_app(ControllerMetrics(), [ip_network("10.0.0.0/24")])

    async def get(peer: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/metrics")).status_code

    assert asyncio.run(get("10.0.0.7")) == 200
    assert asyncio.run(get("10.0.1.7")) == 403
    assert asyncio.run(get("127.0.0.1")) == 403  # not named: loopback is no exception
