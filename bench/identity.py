"""What a Keystone token costs medevac's API, against a configured (static) token.

A lab with a real Keystone (`lab up --identity keystone`) and a real `medevac serve`
on it: ``--requests`` calls of `GET /v1/whoami` with the admin's static token and as
many with a Keystone token already validated (cached), alternated over one
keep-alive connection; then ``--unseen`` fresh Keystone tokens, each timed on its
first call (validated in Keystone as the service user, then cached). Beside it, the
OpenStack services' own way, keystonemiddleware's auth_token (with its in-process
cache) in front of a bare WSGI app, against the same app without it, both served by
waitress in one process of the lab venv (src/medevac/lab/services/
keystonemiddleware_probe.py): what each way adds to a request is compared, not the
servers. Also the lab's Keystone start-up: its process ready, and the seeding of its
users and catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import percentile, tail, tail_name, wait
from docs_section import write_section
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from medevac.lab.client import lab_down, lab_up
from medevac.lab.identity import SERVICE_USER
from medevac.lab.layout import LabPaths, find_lab_python

PROBE = Path(__file__).parent.parent / "src/medevac/lab/services/keystonemiddleware_probe.py"


def sign_in(info: dict[str, Any], name: str) -> str:
    u = next(u for u in info["keystone"]["users"] if u["name"] == name)
    auth = v3.Password(
        auth_url=info["keystone"]["auth_url"],
        username=u["name"],
        password=u["password"],
        project_name=u["project"],
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return str(ks_session.Session(auth=auth).get_token())


def timed(http: httpx.Client, url: str, token: str) -> float:
    t = time.perf_counter()
    r = http.get(url + "/v1/whoami", headers={"X-Auth-Token": token})
    elapsed = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"/v1/whoami answered {r.status_code}: {r.text[:200]}")
    return elapsed * 1000


def timed_get(http: httpx.Client, url: str, token: str | None) -> float:
    headers = {"X-Auth-Token": token} if token else {}
    t = time.perf_counter()
    r = http.get(url, headers=headers)
    elapsed = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:200]}")
    return elapsed * 1000


def middleware(info: dict[str, Any], requests: int, unseen: int) -> dict[str, list[float]]:
    """keystonemiddleware's auth_token against the same WSGI app bare (see PROBE)."""
    service = next(u for u in info["keystone"]["users"] if u["name"] == SERVICE_USER)
    probe = subprocess.Popen(
        [
            str(find_lab_python()),
            str(PROBE),
            "--auth-url",
            info["keystone"]["auth_url"],
            "--username",
            service["name"],
            "--password",
            service["password"],
            "--project",
            service["project"],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert probe.stdout is not None
        ports = json.loads(probe.stdout.readline())
        bare = f"http://127.0.0.1:{ports['bare']}/"
        protected = f"http://127.0.0.1:{ports['protected']}/"
        with httpx.Client(timeout=30) as http:
            cached = sign_in(info, "reader")
            timed_get(http, protected, cached)  # validated once: cached from here on
            for _ in range(20):
                timed_get(http, bare, None)
                timed_get(http, protected, cached)
            bare_ms, cached_ms = [], []
            for _ in range(requests):
                bare_ms.append(timed_get(http, bare, None))
                cached_ms.append(timed_get(http, protected, cached))
            fresh = [sign_in(info, "member-tenant-a") for _ in range(unseen)]
            unseen_ms = [timed_get(http, protected, t) for t in fresh]
    finally:
        probe.terminate()
        probe.wait(timeout=30)
    return {"bare_ms": bare_ms, "cached_ms": cached_ms, "unseen_ms": unseen_ms}


def measure(requests: int, unseen: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="medevac-bench-") as d:
        paths = LabPaths(Path(d))
        t0 = time.monotonic()
        info = lab_up(paths, 2, 1, identity="keystone")
        ready = time.monotonic() - t0
        proc: subprocess.Popen[bytes] | None = None
        try:
            log = paths.log.read_text()
            services = re.search(r"nova and neutron ready in ([\d.]+) s", log)
            seeded = re.search(r"keystone seeded in ([\d.]+) s", log)
            keystone_log = paths.service_log("keystone").read_text()
            ks_ready = re.search(r"keystone ready at \S+ in ([\d.]+) s", keystone_log)
            if not (services and seeded and ks_ready):
                raise RuntimeError("the lab's logs say nothing of Keystone's start")
            with (paths.root / "controller.log").open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "medevac", "serve"],
                    env={**os.environ, "MEDEVAC_CONFIG": info["controller_config"]},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            url, static = info["controller_url"], info["admin_token"]
            with httpx.Client(timeout=30) as http:

                def answers() -> bool:
                    try:
                        return http.get(
                            url + "/v1/whoami", headers={"X-Auth-Token": static}
                        ).is_success
                    except httpx.HTTPError:
                        return False

                wait("medevac serve to answer", answers, 60)
                cached = sign_in(info, "reader")
                timed(http, url, cached)  # validated once: cached from here on
                for _ in range(20):  # warm both paths
                    timed(http, url, static)
                    timed(http, url, cached)
                static_ms, cached_ms = [], []
                for _ in range(requests):
                    static_ms.append(timed(http, url, static))
                    cached_ms.append(timed(http, url, cached))
                fresh = [sign_in(info, "member-tenant-a") for _ in range(unseen)]
                unseen_ms = [timed(http, url, t) for t in fresh]
            ksm = middleware(info, requests, unseen)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
            lab_down(paths)
    return {
        "lab_ready_s": ready,
        "keystone_ready_s": float(ks_ready.group(1)),
        "seed_s": float(seeded.group(1)) - float(services.group(1)),
        "static_ms": static_ms,
        "cached_ms": cached_ms,
        "unseen_ms": unseen_ms,
        "ksm": ksm,
    }


def row(name: str, values: list[float]) -> str:
    name_tail, top = tail(values)
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.2f} ms | "
        f"{top:.2f} ms ({name_tail}) |"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--unseen", type=int, default=30)
    p.add_argument("--json", type=Path)
    p.add_argument("--write-docs", type=Path, help="update this file's identity section")
    args = p.parse_args()
    r = measure(args.requests, args.unseen)
    lines = [
        "| token | requests | median | tail |",
        "|---|---|---|---|",
        row("static (api.tokens)", r["static_ms"]),
        row("Keystone, cached", r["cached_ms"]),
        row("Keystone, unseen (validated in Keystone)", r["unseen_ms"]),
        row("keystonemiddleware: the bare WSGI app, no token", r["ksm"]["bare_ms"]),
        row("keystonemiddleware: a Keystone token, cached", r["ksm"]["cached_ms"]),
        row("keystonemiddleware: unseen (validated in Keystone)", r["ksm"]["unseen_ms"]),
    ]
    ksm_extra = statistics.median(r["ksm"]["cached_ms"]) - statistics.median(r["ksm"]["bare_ms"])
    extra = statistics.median(r["cached_ms"]) - statistics.median(r["static_ms"])
    summary = (
        f"A cached Keystone token costs {extra:+.2f} ms a request (medians) against a "
        f"static one; an unseen one {statistics.median(r['unseen_ms']):.1f} ms "
        f"(p90 {percentile(r['unseen_ms'], 0.9):.1f} ms) on its first request. "
        f"keystonemiddleware adds {ksm_extra:+.2f} ms (medians) to the same app bare for a "
        f"cached token, and an unseen one costs it "
        f"{statistics.median(r['ksm']['unseen_ms']):.1f} ms. The lab's "
        f"Keystone was ready in {r['keystone_ready_s']:.1f} s (database from the template), "
        f"seeded in {r['seed_s']:.1f} s; the whole lab (2 hosts, 2 servers) in "
        f"{r['lab_ready_s']:.1f} s."
    )
    print("\n".join(lines))
    print(summary)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    if args.write_docs:
        body = (
            "`GET /v1/whoami` on a real `medevac serve` of a lab with a real Keystone "
            "(`lab up --identity keystone`), one keep-alive connection, static and cached "
            "calls alternated; tails: "
            f"{tail_name(r['static_ms'], r['cached_ms'], r['unseen_ms'])} per row. "
            "keystonemiddleware: its auth_token in front of a bare WSGI app, against the "
            "same app without it, in one waitress process of the lab venv, the two "
            "alternated the same way.\n\n" + "\n".join(lines) + "\n\n" + summary
        )
        write_section(args.write_docs, "identity", body)


if __name__ == "__main__":
    main()
