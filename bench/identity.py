"""What a Keystone token costs medevac's API, against a configured (static) token.

A lab with a real Keystone (`lab up --identity keystone`) and a real `medevac serve`
on it: ``--requests`` calls of `GET /v1/whoami` with the admin's static token and as
many with a Keystone token already validated (cached), alternated over one
keep-alive connection; then ``--unseen`` fresh Keystone tokens, each timed on its
first call (validated in Keystone as the service user, then cached). Also the lab's
Keystone start-up: its process ready, and the seeding of its users and catalog.
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
from medevac.lab.layout import LabPaths


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
    ]
    extra = statistics.median(r["cached_ms"]) - statistics.median(r["static_ms"])
    summary = (
        f"A cached Keystone token costs {extra:+.2f} ms a request (medians) against a "
        f"static one; an unseen one {statistics.median(r['unseen_ms']):.1f} ms "
        f"(p90 {percentile(r['unseen_ms'], 0.9):.1f} ms) on its first request. The lab's "
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
            f"{tail_name(r['static_ms'], r['cached_ms'], r['unseen_ms'])} per row.\n\n"
            + "\n".join(lines)
            + "\n\n"
            + summary
        )
        write_section(args.write_docs, "identity", body)


if __name__ == "__main__":
    main()
