"""A running lab with medevac on it: `medevac serve` and the demo consumer, as processes.

What the demo and the lab benchmarks share: start both against the configuration
`lab up` wrote, wait until the controller watches every host and knows every server,
register one Doctor-style alarm per server (by its owner, as a VNF manager would),
read what the consumer received, and stop both, whatever happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from medevac.lab.client import project_tokens
from medevac.lab.consumer import doctor_alarm
from medevac.lab.layout import LabError
from medevac.lab.ports import free_port

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T | None], within: float, every: float = 0.1) -> T:
    deadline = time.monotonic() + within
    while True:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(every)


class Stack:
    """The controller and the consumer on a running lab (``info``: what `lab up` returned)."""

    def __init__(self, info: dict[str, Any], *, log: Path | None = None, **overrides: str) -> None:
        self.info = info
        self.url = str(info["controller_url"])
        self.admin = {"X-Auth-Token": str(info["admin_token"])}
        self.consumer_url = f"http://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "MEDEVAC_CONFIG": str(info["controller_config"]), **overrides}
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []
        self.http = httpx.Client(timeout=10)

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self, servers: int, within: float = 60) -> None:
        port = self.consumer_url.rsplit(":", 1)[1]
        self.procs.append(
            subprocess.Popen([sys.executable, "-m", "medevac.lab.consumer", "--port", port])
        )
        out = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "medevac", "serve"],
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        finally:
            if self.log is not None:
                out.close()  # type: ignore[union-attr]

        def ready() -> bool:
            if any(p.poll() is not None for p in self.procs):
                raise LabError(
                    "the controller or the consumer exited at start"
                    + (f"; see {self.log}" if self.log else "")
                )
            hosts = self.get("/v1/hosts")["hosts"]
            known = self.get("/v1/inspector")["topology"]["servers"]
            self.http.get(self.consumer_url + "/_consumer/received").raise_for_status()
            return all(h["state"] == "UP" for h in hosts) and known == servers

        wait_until("the controller to watch every host and know every server", ready, within)

    def get(self, path: str) -> Any:
        r = self.http.get(self.url + path, headers=self.admin)
        r.raise_for_status()
        return r.json()

    def find(self, path: str) -> Any:
        """``get``, but None for a 404."""
        try:
            return self.get(path)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def register_alarms(self, servers: list[dict[str, Any]]) -> dict[str, str]:
        """One alarm per server, created by its project's member; alarm id by server id."""
        tokens = project_tokens(self.info["controller_config"])
        alarms = {}
        for s in servers:
            r = self.http.post(
                self.url + "/v2/alarms",
                json=doctor_alarm(s["id"], s["name"], self.consumer_url + "/failure"),
                headers={"X-Auth-Token": tokens[s["project_id"]]},
            )
            r.raise_for_status()
            alarms[s["id"]] = r.json()["alarm_id"]
        return alarms

    def received(self) -> dict[str, Any]:
        r = self.http.get(self.consumer_url + "/_consumer/received")
        r.raise_for_status()
        return dict(r.json())

    def reset_consumer(self) -> None:
        self.http.post(self.consumer_url + "/_consumer/reset").raise_for_status()

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs.clear()
        self.http.close()
