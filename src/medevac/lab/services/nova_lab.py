"""Nova's control plane and compute hosts in this process (lab Nova service).

Nova's own functional-test fixtures run the real Nova API, conductor, scheduler,
compute managers and Placement; the lab patches a few things first (nova_patches),
lifts quotas, opens ``host_status`` to a server's own project, and serves the API
and the control API on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from http.server import ThreadingHTTPServer
from typing import Any

from lab_keystone import KeystoneTokens
from nova_api_server import (
    QuietWSGIHandler,
    ThreadingWSGIServer,
    identity_wrapper,
    serve_in_thread,
)
from nova_computes import Computes
from nova_control_api import HttpError, make_control_handler
from nova_heartbeat import Heartbeat
from nova_notifications import NotificationForwarder
from nova_patches import (
    patch_fake_rpc,
    patch_lazy_provider_allocations,
    patch_live_migration,
    patch_notifications,
    patch_service_group,
    patch_target_cell,
)

LOG = logging.getLogger("lab.nova_service")

IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"
FLAVOR_ID = "1"
LAB_MEMBER_RULE = "role:admin or role:member"
HOST_STATUS_RULE = "role:admin or (role:member and project_id:%(project_id)s)"


class Lab:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.case: Any = None
        self.heartbeat = Heartbeat(float(args.report_interval))
        self.computes = Computes(self.heartbeat)
        self.forwarder: NotificationForwarder | None = None
        self.api_server: ThreadingWSGIServer | None = None
        self.control_server: ThreadingHTTPServer | None = None

    # -- setup -------------------------------------------------------------------
    def start(self) -> None:
        # Nova's configuration and its functional-test package load before any patch.
        import nova.conf
        import nova.tests.functional  # noqa: F401
        from nova.tests.functional import integrated_helpers

        lab = self
        if self.forwarder is not None:
            self.forwarder.start()
        patch_fake_rpc()
        patch_lazy_provider_allocations()
        patch_service_group(self.heartbeat.register)
        patch_notifications(self.forwarder)
        patch_target_cell()
        patch_live_migration()

        class LabCase(integrated_helpers.ProviderUsageBaseTestCase):  # type: ignore[misc]
            compute_driver = "fake.FakeDriver"

            def setUp(self) -> None:
                self.flags(
                    api_paste_config=os.path.join(sys.prefix, "etc", "nova", "api-paste.ini"),
                    group="wsgi",
                )
                self.flags(
                    report_interval=max(1, round(lab.args.report_interval)),
                    service_down_time=lab.args.service_down_time,
                )
                super().setUp()

            def _clear_attrs(self) -> None:
                pass

            def runTest(self) -> None:
                pass

        case = LabCase("runTest")
        self.case = case
        t0 = time.monotonic()
        case.setUp()
        # Nova's test base makes idle pool workers poll every 10 ms (its tests then
        # tear down at once). A running Nova's workers wait 1 s: with the lab's 200
        # or so idle workers, 10 ms kept a core busy waking them, on a machine the
        # controller shares.
        import futurist._thread  # (only once Nova has set up its threading mode)

        futurist._thread.ThreadWorker.MAX_IDLE_FOR = 1
        self._tame_logging()
        case.flags(notification_format="versioned", group="notifications")
        for opt in (
            "instances",
            "cores",
            "ram",
            "metadata_items",
            "key_pairs",
            "server_groups",
            "server_group_members",
        ):
            case.flags(**{opt: -1, "group": "quota"})
        case.flags(reserved_host_memory_mb=0)
        case.flags(service_down_time=self.args.service_down_time)
        case.policy.set_rules(
            {
                "os_compute_api:servers:show:host_status": HOST_STATUS_RULE,
                "os_compute_api:servers:show:host_status:unknown-only": HOST_STATUS_RULE,
                # The lab places each tenant's servers on a chosen host (2.74
                # ``host``), which stock policy keeps for admins.
                "compute:servers:create:requested_destination": LAB_MEMBER_RULE,
            },
            overwrite=False,
        )
        LOG.info("control plane up in %.2fs", time.monotonic() - t0)

        self.heartbeat.start()
        self.computes.start(case, self.args.hosts)
        LOG.info("%d computes up in %.2fs", len(self.computes.hosts), time.monotonic() - t0)

        keystone = KeystoneTokens(self.args.keystone_url) if self.args.keystone_url else None
        app = identity_wrapper(case.api_fixture.app(), keystone)
        self.api_server = ThreadingWSGIServer(("127.0.0.1", 0), QuietWSGIHandler)
        self.api_server.set_app(app)
        serve_in_thread(self.api_server, "lab-api")
        self.control_server = ThreadingHTTPServer(("127.0.0.1", 0), make_control_handler(self))
        self.control_server.daemon_threads = True
        serve_in_thread(self.control_server, "lab-control")

    def _tame_logging(self) -> None:
        """Drop the in-memory log capture; log INFO+ to the log file."""
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        fmt = logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)
        level = os.environ.get("NOVA_LAB_LOG_LEVEL", "INFO").upper()
        root.setLevel(getattr(logging, level, logging.INFO))
        if root.level <= logging.DEBUG:
            return
        for noisy in (
            "nova.scheduler.host_manager",
            "placement.requestlog",
            "nova.api.openstack.requestlog",
            "oslo.messaging",
            "stevedore",
            "nova.compute.resource_tracker",
        ):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    # -- heartbeat timings -------------------------------------------------------
    def heartbeat_timings(self) -> dict[str, Any]:
        from nova import conf

        return {
            "report_interval": self.heartbeat.report_interval,
            "service_down_time": conf.CONF.service_down_time,
        }

    def set_heartbeat_timings(self, body: dict[str, Any]) -> dict[str, Any]:
        ri = body.get("report_interval", self.heartbeat.report_interval)
        sdt = body.get("service_down_time", self.heartbeat_timings()["service_down_time"])
        if (
            not isinstance(ri, (int, float))
            or isinstance(ri, bool)
            or not isinstance(sdt, int)
            or isinstance(sdt, bool)
            or ri <= 0
            or sdt <= ri
        ):
            raise HttpError(
                400, "need report_interval > 0 and integer service_down_time > report_interval"
            )
        self.case.flags(report_interval=max(1, round(ri)), service_down_time=sdt)
        self.heartbeat.set_interval(float(ri))
        return self.heartbeat_timings()

    # -- what the ready file says ------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "control_url": self.control_url,
            "pid": os.getpid(),
            "image_id": IMAGE_ID,
            "flavor_id": FLAVOR_ID,
            "hosts": list(self.computes.hosts),
            "notifications": bool(self.forwarder and self.forwarder.enabled),
            **self.heartbeat_timings(),
        }

    @property
    def api_url(self) -> str:
        assert self.api_server is not None
        return f"http://127.0.0.1:{self.api_server.server_address[1]}/v2.1"

    @property
    def control_url(self) -> str:
        assert self.control_server is not None
        return f"http://127.0.0.1:{self.control_server.server_address[1]}"

    # -- teardown ----------------------------------------------------------------
    def shutdown(self) -> None:
        self.heartbeat.stop()
        if self.case is not None:
            # Idle workers see their pool's shutdown only when their wait ends: at
            # the 1 s set in start, the four pools took 4 s to stop. By the time
            # the services below have stopped, every worker waits 10 ms again.
            import futurist._thread

            futurist._thread.ThreadWorker.MAX_IDLE_FOR = 0.01  # type: ignore[assignment]  # an int in its stub, a float wait in its use
        for srv in (self.api_server, self.control_server):
            if srv is not None:
                with contextlib.suppress(Exception):
                    srv.shutdown()
                    srv.server_close()
        if self.case is not None:
            done = threading.Event()

            def cleanup() -> None:
                try:
                    self.case.doCleanups()
                except Exception:
                    LOG.debug("cleanup: %s", traceback.format_exc())
                done.set()

            threading.Thread(target=cleanup, daemon=True, name="lab-cleanup").start()
            if not done.wait(8):
                LOG.warning("cleanup did not finish in 8s; exiting anyway")
        if self.forwarder is not None:
            self.forwarder.stop()
