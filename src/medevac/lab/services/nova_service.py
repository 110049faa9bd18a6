"""Real Nova + Placement on loopback, with fake hypervisors (lab service).

Run with the lab venv's interpreter (it does not import ``medevac``)::

    .venv-lab/bin/python src/medevac/lab/services/nova_service.py \\
        --hosts host1,host2 --ready-file /tmp/nova.json \\
        [--report-interval 1] [--service-down-time 5] \\
        [--transport-url rabbit://guest:guest@127.0.0.1:5672/] [--log-file F] \\
        [--keystone-url http://127.0.0.1:K/v3]

It reuses the fixtures Nova ships for its functional tests: real Nova API,
conductor, scheduler, compute managers, service-group heartbeat logic and
Placement, all in this one process; the hypervisor is ``fake.FakeDriver``
(1000 vCPU, 800 GB of RAM per host: room for any lab layout), quotas are lifted.

The service's parts are the modules beside this file, imported as top-level
modules (the script's directory is first on ``sys.path``): ``nova_lab`` (Nova's
fixtures set up and served), ``nova_patches`` (what the lab changes in Nova and
oslo.messaging), ``nova_heartbeat`` (one heartbeat thread for every service),
``nova_computes`` (the compute hosts, their fake hypervisors and the faults the
control API applies to them), ``nova_control_api``, ``nova_api_server`` (the API's
HTTP server and identity shim) and ``nova_notifications`` (forwarding to RabbitMQ).

When ready it writes (atomically) the ready file::

    {"api_url": "http://127.0.0.1:P/v2.1", "control_url": "http://127.0.0.1:Q",
     "pid": N, "image_id": ..., "flavor_id": "1", "hosts": [...],
     "report_interval": F, "service_down_time": N}

Nova API (``api_url``)
    Version discovery at ``/`` and ``/v2.1``. Every request is admin (user
    ``admin``, project ``admin``, roles admin,member,reader) unless the
    ``X-Auth-Token`` is ``lab-project-<PROJECT>`` or
    ``lab-project-<PROJECT>-user-<USER>``: then a member (roles member,reader)
    of PROJECT (user ``lab-user`` by default). ``host_status`` (both the
    ``show:host_status`` and ``show:host_status:unknown-only`` policies) is
    opened to members of the server's own project, as NFV clouds do. With
    ``--keystone-url`` (``lab up --identity keystone``) the token is validated in
    the lab's Keystone instead (lab_keystone.py): a token it refuses gets 401, and
    a valid one stands for its user, project and roles (an admin as user ``admin``,
    which Nova's stubbed Keystone makes the admin).

Control API (``control_url``, JSON)
    GET  /healthz                       {"ok": true}
    GET  /info                          ports, hosts, image/flavor ids, timings
    GET  /hosts                         {"hosts": {h: {"compute_running": bool,
                                          "domains_alive": bool}}}
    POST /hosts/<h>/stop   {"domains": "destroy"|"keep"}  (default destroy)
    POST /hosts/<h>/start  {"domains_alive": bool}        (default: unchanged)
    POST /hosts/<h>/power-cut            every domain of the host powered off at
                                          once; nova-compute is left as it is
    POST /servers/<uuid>/crash
    POST /servers/<uuid>/heal
    GET  /domains                       {h: [uuid of each RUNNING domain]}
    GET  /domains/all                   {h: {uuid: power state name}} for every
                                          domain defined on the fake hypervisor
    GET  /heartbeat                     current timings
    POST /heartbeat {"report_interval": F, "service_down_time": N}
    Errors: 404 {"error": ...} for unknown host/server/path, 400 for a bad body,
    409 when the operation does not fit the current state.

Live migration
    Nova's own path with ``fake.FakeDriver`` (conductor checks, the destination's
    claim, ``post_live_migration_at_destination``); the source's fake hypervisor
    drops the domain afterwards (nova_patches.patch_live_migration), so a migrated
    server runs on one host only.

Semantics chosen
    * stop/destroy: the host's nova-compute stops (RPC servers down, no more
      heartbeats, so Nova reports it ``down`` / host_status UNKNOWN after
      service_down_time) and every domain of the host is powered off in the
      fake hypervisor (it keeps its definitions, like libvirt's persistent
      domains after a power loss). stop/keep: only nova-compute stops; the
      domains go on running.
    * start: a brand new compute manager is started on the same fake
      hypervisor (Nova's ``restart_compute_service(keep_hypervisor_state=
      True)`` path), so ``init_host`` destroys the instances that were
      evacuated away, as production does. With ``domains_alive`` false the
      remaining domains stay (or are made) SHUTDOWN and a power-state sync is
      run at once for the host's instances: Nova then sees them shut down and
      calls its own stop API, so they end ``SHUTOFF`` (vm_state stopped,
      power_state 4), the state a compute host's reboot leaves them in with
      ``resume_guests_state_on_host_boot`` off. With ``domains_alive`` true the
      domains are RUNNING again.
    * crash: the server's domain goes to power state CRASHED, then Nova's
      power-state sync runs for it synchronously on its host (the per-instance
      step of ``_sync_power_states``): Nova records the power state and calls
      its stop API, so the server ends SHUTOFF (vm_state stopped, power_state 4).
      If the host's nova-compute is stopped only the domain changes.
    * heal: if Nova already stopped the server, heal starts it through Nova's
      compute API (``os-start`` path, the driver powers the domain on); if Nova
      still thinks it is active the domain is simply RUNNING again and synced.
      Either way it ends ACTIVE / running.

Deadlock avoidance
    Nova's threading fixtures guard SQLite with a writer RLock per database and
    swap a process-global "current cell" under a writer-preferring
    reader/writer lock on every ``target_cell`` to cell0 (every server list
    scatter-gathers over cell0 and cell1). A thread holding a DB writer lock
    that needs the global cell state, while another holds the cell read lock
    and waits on that DB writer lock and a third waits to swap the state, is a
    cycle: it was seen with big boots and 1 s heartbeats. This service
    removes the cycle instead of making it rarer:
      1. ``target_cell`` no longer swaps the global cell state: targeted
         contexts already carry their own DB connection, and untargeted code
         always uses the default cell (cell1, where every compute lives). The
         reader/writer lock thus never has a writer, so no thread ever waits
         on it; the only blocking locks left are the per-DB writer RLocks,
         held only for one transaction.
      2. Nova's per-service heartbeat timers are replaced by one heartbeat
         thread that reports every live service in turn with Nova's own
         ``DbDriver._report_state``: at most one heartbeat write in flight,
         and the timings can be changed at run time (POST /heartbeat takes
         effect at once; ``service_down_time`` is read live by the
         service-group driver).
    The lab can therefore boot at full speed with the final (short) timings.
    A second, optional guard: the caller may still lengthen the heartbeat while
    booting through POST /heartbeat. SIGUSR1 dumps every thread's stack to the
    log (for diagnosing a hang).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from typing import Any

# The modules beside this file: it runs as a script with the lab venv's interpreter.
from nova_lab import Lab
from nova_notifications import NotificationForwarder

# Before anything imports Nova (only Lab.start does).
os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")
os.environ.setdefault("OS_LOG_CAPTURE", "0")

LOG = logging.getLogger("lab.nova_service")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--hosts", required=True, help="comma separated compute host names")
    p.add_argument("--report-interval", type=float, default=1.0)
    p.add_argument("--service-down-time", type=int, default=5)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--transport-url", default=None)
    p.add_argument("--log-file", default=None)
    p.add_argument(
        "--keystone-url",
        default=None,
        help="the lab Keystone's v3 URL: tokens are validated there (default: the token's form)",
    )
    args = p.parse_args(argv)
    args.hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if not args.hosts:
        p.error("--hosts needs at least one host")
    if len(set(args.hosts)) != len(args.hosts):
        p.error("--hosts has duplicates")
    for h in args.hosts:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", h):
            p.error(f"bad host name {h!r}")
    if args.report_interval <= 0:
        p.error("--report-interval must be > 0")
    if args.service_down_time <= args.report_interval:
        p.error("--service-down-time must exceed --report-interval")
    return args


def write_ready(path: str, data: dict[str, Any]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=d)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t_start = time.monotonic()
    if args.log_file:
        # Everything (stray prints, handlers Nova's fixtures restore while
        # cleaning up, faulthandler dumps) lands in the log file.
        fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())

    lab = Lab(args)
    if args.transport_url:
        lab.forwarder = NotificationForwarder(args.transport_url)
    try:
        lab.start()
    except Exception:
        LOG.exception("lab failed to start")
        lab.shutdown()
        logging.shutdown()
        os._exit(1)
    if stop.is_set():
        lab.shutdown()
        logging.shutdown()
        os._exit(0)
    info = lab.info()
    write_ready(args.ready_file, info)
    LOG.info(
        "ready in %.2fs: api %s control %s",
        time.monotonic() - t_start,
        info["api_url"],
        info["control_url"],
    )
    while not stop.wait(0.5):
        pass
    LOG.info("stopping")
    lab.shutdown()
    LOG.info("stopped")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Fixture cleanups may leave non-daemon worker threads behind.
    os._exit(0)


if __name__ == "__main__":
    main()
