"""The metrics as Prometheus itself sees them: Debian's `prometheus` scrapes a real
`medevac serve` on the lab, through the API with a reader's bearer token and through
the tokenless scraper listener; after a host crash, its own query API shows the
detection histogram's count gone up and a median computed from its buckets.

Prometheus is started here (loopback, a temporary configuration and data dir) and
stopped at the end; without it the test fails, it is never skipped.
"""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import free_port, wait_for
from tests.lab.conftest import Controller, RunningLab

HOST = "host2"
SCRAPE_EVERY = "1s"


def reader_token(lab: RunningLab) -> str:
    config = tomllib.loads(Path(lab.info["controller_config"]).read_text())
    return next(t["token"] for t in config["api"]["tokens"] if t["role"] == "reader")


@pytest.fixture(scope="module")
def scraper_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def controller(lab: RunningLab, scraper_port: int) -> Iterator[Controller]:
    # Observe only: the verdict and its metrics are what this is about, and the shared
    # lab must stay as it is for the tests after these.
    ctl = Controller.start(
        lab,
        MEDEVAC_INSPECTOR__ACT="false",
        MEDEVAC_METRICS__LISTEN=f"127.0.0.1:{scraper_port}",
    )
    try:
        yield ctl
    finally:
        ctl.stop()


@pytest.fixture(scope="module")
def prometheus(
    lab: RunningLab,
    controller: Controller,
    scraper_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: scripts/install-debian-deps.sh installs it")
    root = tmp_path_factory.mktemp("prometheus")
    token_file = root / "token"
    token_file.write_text(reader_token(lab))
    token_file.chmod(0o600)
    api = urlsplit(controller.url)
    config = root / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: {SCRAPE_EVERY}
  scrape_timeout: {SCRAPE_EVERY}
scrape_configs:
  - job_name: medevac
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{api.hostname}:{api.port}"]
  - job_name: medevac-scraper
    static_configs:
      - targets: ["127.0.0.1:{scraper_port}"]
"""
    )
    port = free_port()
    log = (root / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited ({proc.returncode}):\n{(root / 'prometheus.log').read_text()}"
            )
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("prometheus to be ready", ready, 60, 0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query through Prometheus' HTTP API: its result vector."""
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(url: str, promql: str) -> float | None:
    """The query's single value, or None while it has none."""
    result = query(url, promql)
    if not result:
        return None
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_prometheus_scrapes_both_ways_and_sees_detection_after_a_host_crash(
    lab: RunningLab, controller: Controller, prometheus: str
) -> None:
    def targets_up() -> bool:
        r = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
        health = {t["labels"]["job"]: t["health"] for t in r["data"]["activeTargets"]}
        return health == {"medevac": "up", "medevac-scraper": "up"}

    wait_for("both scrape targets up", targets_up, 30, 0.2)
    detected = 'medevac_detection_seconds_count{job="medevac",since="silence"}'
    first = wait_for(
        "a first scrape of the detection histogram", lambda: query(prometheus, detected), 30
    )
    before = float(first[0]["value"][1])
    hosts_up = scalar(prometheus, 'medevac_hosts{job="medevac",state="UP"}')
    assert hosts_up == len(lab.info["hosts"])
    n = len(controller.verdicts())
    lab.client.inject("host-crash", HOST)
    try:
        controller.wait_verdict("HOST_UNREACHABLE", HOST, n)

        def went_up() -> float | None:
            now = scalar(prometheus, detected)
            return now if now is not None and now > before else None

        after = wait_for("Prometheus to see the detection count go up", went_up, 30, 0.2)
        assert after == before + 1
        # The same count through the tokenless listener, and the verdict counted by kind.
        through_listener = detected.replace('job="medevac"', 'job="medevac-scraper"')
        wait_for(
            "the scraper listener's count",
            lambda: scalar(prometheus, through_listener) == after or None,
            30,
            0.2,
        )
        unreachable = scalar(
            prometheus, 'medevac_verdicts_total{job="medevac",kind="HOST_UNREACHABLE"}'
        )
        assert unreachable is not None and unreachable >= 1
        buckets = 'medevac_detection_seconds_bucket{job="medevac",since="silence"}'
        median = scalar(prometheus, f"histogram_quantile(0.5, {buckets})")
        assert median is not None and math.isfinite(median) and 0 < median <= 60
        lost = scalar(prometheus, 'medevac_hosts{job="medevac",state="LOST"}')
        assert lost == 1
        # Nova polled and the topology listed through the driver: counted by result.
        nova_ok = scalar(
            prometheus, 'medevac_cloud_calls_total{job="medevac",service="compute",result="ok"}'
        )
        assert nova_ok is not None and nova_ok > 0
    finally:
        lab.client.heal("host-crash", HOST)
    controller.wait_verdict("HOST_UP", HOST, n)
