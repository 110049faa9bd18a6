"""A running lab with medevac on it: `medevac serve` and the demo consumer, as processes.

What the demo and the lab benchmarks share: start both against the configuration
`lab up` wrote, wait until the controller watches every host and knows every server,
register one Doctor-style alarm per server (by its owner, as a VNF manager would),
read what the consumer received, and stop both, whatever happened.
"""

from __future__ import annotations

import os
import signal
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
    """The controller (or each of a lab's several) and the consumer on a running lab
    (``info``: what `lab up` returned)."""

    def __init__(self, info: dict[str, Any], *, log: Path | None = None, **overrides: str) -> None:
        self.info = info
        self.admin = {"X-Auth-Token": str(info["admin_token"])}
        self.consumer_url = f"http://127.0.0.1:{free_port()}"
        self.overrides = overrides
        self.env = {**os.environ, "MEDEVAC_CONFIG": str(info["controller_config"]), **overrides}
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []
        # member id (None for a lab of one), API URL, process: each controller started.
        self.controllers: list[tuple[str | None, str, subprocess.Popen[bytes]]] = []
        self.http = httpx.Client(timeout=10)

    @property
    def url(self) -> str:
        """The API of the first controller still running."""
        for _, url, proc in self.controllers:
            if proc.poll() is None:
                return url
        return str(self.info["controller_url"])

    def urls(self) -> dict[str | None, str]:
        """Each running controller's API, by member id."""
        return {m: url for m, url, proc in self.controllers if proc.poll() is None}

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
        several = self.info.get("controllers") or []
        if len(several) > 1:
            for c in several:
                env = {**os.environ, "MEDEVAC_CONFIG": str(c["config"]), **self.overrides}
                log = (
                    self.log.with_name(f"{self.log.stem}-{c['member_id']}.log")
                    if self.log
                    else None
                )
                self._serve(c["member_id"], str(c["url"]), env, log)
        else:
            self._serve(None, str(self.info["controller_url"]), self.env, self.log)

        def ready() -> bool:
            if any(p.poll() is not None for p in self.procs):
                raise LabError(
                    "a controller or the consumer exited at start"
                    + (f"; see {self.log.parent}" if self.log else "")
                )
            self.http.get(self.consumer_url + "/_consumer/received").raise_for_status()
            owned: list[str] = []
            for member, url, _ in self.controllers:
                hosts = self.get_from(url, "/v1/hosts")["hosts"]
                known = self.get_from(url, "/v1/inspector")["topology"]["servers"]
                if not all(h["state"] == "UP" for h in hosts) or known != servers:
                    return False
                if member is not None:
                    view = self.get_from(url, "/v1/cluster")
                    if len(view["members"]) != len(self.controllers):
                        return False
                    owned += view["hosts"]
            # Several: each host has exactly one owner.
            return member is None or sorted(owned) == sorted(self.info["hosts"])

        what = "every controller to watch every host and know every server"
        wait_until(what, ready, within)

    def _serve(self, member: str | None, url: str, env: dict[str, str], log: Path | None) -> None:
        out = log.open("ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "medevac", "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        self.controllers.append((member, url, proc))

    def get_from(self, url: str, path: str) -> Any:
        r = self.http.get(url + path, headers=self.admin)
        r.raise_for_status()
        return r.json()

    def owner_of(self, host: str) -> tuple[str, int] | None:
        """A lab of several: the running controller that holds ``host``, and its epoch."""
        for member, url in self.urls().items():
            try:
                view = self.get_from(url, "/v1/cluster")
            except httpx.HTTPError:
                continue
            if host in view["hosts"]:
                return str(member), int(view["hosts"][host])
        return None

    def get(self, path: str) -> Any:
        """From the first controller that answers (one may just have been killed)."""
        urls = list(self.urls().values()) or [self.url]
        for url in urls[:-1]:
            try:
                return self.get_from(url, path)
            except httpx.TransportError:
                continue
        return self.get_from(urls[-1], path)

    def find(self, path: str) -> Any:
        """``get``, but None for a 404."""
        try:
            return self.get(path)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def register_alarms(
        self, servers: list[dict[str, Any]], url: str | None = None
    ) -> dict[str, str]:
        """One alarm per server, created by its project's member (through the controller
        at ``url``, the first running one by default); alarm id by server id."""
        tokens = project_tokens(self.info["controller_config"])
        alarms = {}
        for s in servers:
            r = self.http.post(
                (url or self.url) + "/v2/alarms",
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
                os.kill(p.pid, signal.SIGCONT)  # a paused controller stops too
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs.clear()
        self.controllers.clear()
        self.http.close()
