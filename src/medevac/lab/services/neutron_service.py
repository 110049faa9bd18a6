r"""A real Neutron API server for the lab.

Runs the real Neutron ML2 plugin (extension driver ``data_plane_status``,
type drivers local/flat/vlan, sqlite) as set up by Neutron's own unit-test
case classes, and serves its WSGI application over HTTP on 127.0.0.1.

Run with the lab venv's interpreter (it must not import medevac)::

    .venv-lab/bin/python neutron_service.py --physnets physnet1,physnet2 \
        --ready-file /tmp/neutron.json [--db /tmp/neutron.sqlite] [--log-file F] \
        [--fix-data-plane-status-unset]

Stock Neutron 29 answers 500 to PUT {"port": {"data_plane_status": null}}
(its object field is not nullable); --fix-data-plane-status-unset makes null
clear the status instead. Ports on any host bind as vif_type "ovs", ACTIVE.

URL layout (as a real Neutron behind its api-paste pipeline):
  GET /            -> Neutron's own versions document (links to /v2.0/)
  /v2.0/...        -> Neutron's v2.0 API (ports, networks, extensions, ...)

Identity, with --keystone-url URL: what the lab Keystone says of the X-Auth-Token
(an invalid one: 401). Without it (no Keystone), from the X-Auth-Token header:
  lab-project-<PROJECT_ID>               member+reader of that project
  lab-project-<PROJECT_ID>-user-<USER>   the same, with that user id
  anything else or missing               admin (project "admin"; resources
                                         it creates without project_id are
                                         owned by "admin")

When serving, writes {"url": "http://127.0.0.1:P", "pid": N} to the ready
file (atomically). Stops on SIGTERM/SIGINT and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socketserver
import sys
import threading
import time
import warnings
from typing import Any
from wsgiref import simple_server

# The unit-test base class arms a timeout from OS_TEST_TIMEOUT: never here.
os.environ.pop("OS_TEST_TIMEOUT", None)
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")
warnings.filterwarnings("ignore", message=r'The selected oslo_service backend is "eventlet"')

from lab_keystone import Identity, KeystoneTokens  # noqa: E402 (after the warnings filters)

LOG = logging.getLogger("lab.neutron")

ADMIN_PROJECT = "admin"
ADMIN_USER = "admin"
TOKEN_PREFIX = "lab-project-"  # noqa: S105 (a token's form, not a secret)
USER_MARK = "-user-"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve a real Neutron API on loopback.")
    p.add_argument(
        "--physnets", default="physnet1", help="comma separated physical networks (flat and vlan)"
    )
    p.add_argument("--ready-file", required=True)
    p.add_argument("--db", default=None, help="sqlite file (default: in-memory database)")
    p.add_argument("--log-file", default=None)
    p.add_argument(
        "--keystone-url",
        default=None,
        help="the lab Keystone's v3 URL: tokens are validated there (default: the token's form)",
    )
    p.add_argument(
        "--fix-data-plane-status-unset",
        action="store_true",
        help="let PUT data_plane_status=null clear the status (stock Neutron 29 answers 500)",
    )
    return p.parse_args(argv)


def setup_logging(log_file: str | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # oslo.cache probes an optional memcache backend at import; not used here.
    logging.getLogger("stevedore.extension").setLevel(logging.CRITICAL)
    LOG.setLevel(logging.INFO)


def write_ready(path: str, payload: dict[str, Any]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_case(physnets: list[str], db_path: str | None, fix_dps_unset: bool = False) -> Any:
    """Set up Neutron's ML2 data-plane-status test case and return it."""
    # Must come first: selects oslo.service's threading backend.
    import neutron.tests.unit  # noqa: F401
    from neutron.conf.plugins.ml2.drivers import driver_type
    from neutron.tests.unit.plugins.ml2.drivers import mechanism_test
    from neutron.tests.unit.plugins.ml2.extensions import test_data_plane_status
    from neutron_lib import constants as n_const
    from neutron_lib import fixture as lib_fixtures
    from neutron_lib.api.definitions import portbindings
    from oslo_config import cfg
    from oslo_db.sqlalchemy import engines

    class FileSqlFixture(lib_fixtures.SqlFixture):  # type: ignore[misc]
        """Neutron's schema in a sqlite file instead of memory."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self._path = path

        def _init_resources(self) -> None:
            self.engine = engines.create_engine("sqlite:///" + self._path)
            self._generate_schema(self.engine)

        def _delete_from_schema(self, engine: Any) -> None:
            pass

    # The test mechanism driver only binds a few magic host names; bind any
    # other host as an OVS port (vif_type "ovs", port ACTIVE) like a real
    # agent-backed driver would, so ports look like those of running VMs.
    special_hosts = {
        "host-ovs-no_filter",
        "host-bridge-filter",
        "host-ovs-filter-active",
        "host-hierarchical",
        "host-fail",
    }
    original_bind = mechanism_test.TestMechanismDriver.bind_port

    def bind_port(self: Any, context: Any) -> Any:
        if context.host in special_hosts:
            return original_bind(self, context)
        self._check_port_context(context, False)
        segment = context.segments_to_bind[0]
        context.set_binding(
            segment["id"],
            portbindings.VIF_TYPE_OVS,
            {portbindings.CAP_PORT_FILTER: True},
            status=n_const.PORT_STATUS_ACTIVE,
        )
        self.bound_ports.add((context.current["id"], context.host))

    mechanism_test.TestMechanismDriver.bind_port = bind_port
    # An L2 agent-backed driver: ports without fixed IPs can be bound too.
    mechanism_test.TestMechanismDriver.connectivity = property(
        lambda self: portbindings.CONNECTIVITY_L2
    )

    if fix_dps_unset:
        # Neutron 29 accepts {"data_plane_status": null} in the API but its
        # PortDataPlaneStatus object field is not nullable, so the update
        # fails with a 500. Opt-in repair: null removes the status row.
        from neutron.db import data_plane_status_db
        from neutron.objects.port.extensions import data_plane_status as dps_obj
        from neutron_lib.api.definitions import data_plane_status as dps_lib

        mixin = data_plane_status_db.DataPlaneStatusMixin
        original_update = mixin._process_update_port_data_plane_status

        def update_dps(self: Any, context: Any, data: Any, res: Any) -> None:
            if dps_lib.DATA_PLANE_STATUS in data and data[dps_lib.DATA_PLANE_STATUS] is None:
                obj = dps_obj.PortDataPlaneStatus.get_object(context, port_id=res["id"])
                if obj:
                    obj.delete()
                res[dps_lib.DATA_PLANE_STATUS] = None
                return
            original_update(self, context, data, res)

        mixin._process_update_port_data_plane_status = update_dps

    class LabCase(test_data_plane_status.DataPlaneStatusSML2ExtDriverTestCase):  # type: ignore[misc]
        def get_additional_service_plugins(self) -> dict[str, str]:
            # As in a default deployment: revision_number, timestamps, tags.
            return {"revisions": "revisions", "timestamp": "timestamp", "tag": "tag"}

        def setup_parent(self) -> None:
            driver_type.register_ml2_drivers_flat_opts()
            driver_type.register_ml2_drivers_vlan_opts()
            cfg.CONF.set_override("type_drivers", ["local", "flat", "vlan"], group="ml2")
            cfg.CONF.set_override("project_network_types", ["local"], group="ml2")
            cfg.CONF.set_override("flat_networks", physnets, group="ml2_type_flat")
            # Bare names: provider networks only, no tenant VLAN pool to fill.
            cfg.CONF.set_override("network_vlan_ranges", physnets, group="ml2_type_vlan")
            super().setup_parent()

        def _setup_database_fixtures(self) -> Any:
            if db_path is None:
                return super()._setup_database_fixtures()
            fixture = FileSqlFixture(db_path)
            self.useFixture(fixture)
            self.engine = fixture.engine

        def _clear_attrs(self) -> None:
            pass

    case = LabCase("test_show_port_has_data_plane_status")
    case.setUp()
    return case


def make_context(token: str | None) -> Any:
    from neutron_lib import context as n_context

    if token and token.startswith(TOKEN_PREFIX):
        rest = token[len(TOKEN_PREFIX) :]
        project, sep, user = rest.partition(USER_MARK)
        if project:
            return n_context.Context(
                user_id=(user if sep and user else f"user-{project}"),
                project_id=project,
                roles=["member", "reader"],
                is_admin=False,
            )
    return n_context.Context(
        user_id=ADMIN_USER,
        project_id=ADMIN_PROJECT,
        roles=["admin", "member", "reader"],
        is_admin=True,
    )


def keystone_context(identity: Identity) -> Any:
    """The request context keystonemiddleware's headers would give Neutron."""
    from neutron_lib import context as n_context

    return n_context.Context(
        user_id=identity.user_id,
        project_id=identity.project_id,
        roles=list(identity.roles),
        is_admin=identity.is_admin,
    )


class LabApp:
    """Maps / to the versions document and /v2.0 to Neutron's v2.0 app."""

    def __init__(self, api: Any, versions_app: Any, keystone: KeystoneTokens | None = None) -> None:
        self.api = api
        self.versions_app = versions_app
        self.keystone = keystone
        # One request at a time: sqlite (one shared connection when in memory).
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/v2.0" or path.startswith("/v2.0/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/v2.0"
            environ["PATH_INFO"] = path[len("/v2.0") :] or "/"
            token = environ.get("HTTP_X_AUTH_TOKEN")
            if self.keystone is None:
                environ["neutron.context"] = make_context(token)
            else:
                judged = self.keystone.judge(token)
                if isinstance(judged, tuple):
                    status, headers, refusal = judged
                    start_response(status, headers)
                    return [refusal]
                environ["neutron.context"] = keystone_context(judged)
            app = self.api
        elif path == "/":
            app = self.versions_app
        else:
            body = json.dumps(
                {
                    "NeutronError": {
                        "type": "HTTPNotFound",
                        "message": f"Not found: {path}",
                        "detail": "",
                    }
                }
            ).encode()
            start_response(
                "404 Not Found",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        with self.lock:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close:
                    close()


class QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s " + format, self.address_string(), *args)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_file)
    t0 = time.monotonic()
    physnets = [p.strip() for p in args.physnets.split(",") if p.strip()]

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    case = build_case(physnets, args.db, args.fix_data_plane_status_unset)
    # Neutron's unit-test base silences its loggers; keep errors visible.
    for name in ("neutron", "neutron_lib", "oslo_policy", "oslo_db"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from neutron.pecan_wsgi import app as pecan_app

    versions_app = pecan_app.versions_factory(None)

    server = simple_server.make_server(
        "127.0.0.1",
        0,
        LabApp(
            case.api,
            versions_app,
            KeystoneTokens(args.keystone_url) if args.keystone_url else None,
        ),
        server_class=ThreadingWSGIServer,
        handler_class=QuietHandler,
    )
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="wsgi", daemon=True
    )
    thread.start()
    write_ready(args.ready_file, {"url": url, "pid": os.getpid()})
    LOG.info(
        "neutron ready at %s in %.2fs (physnets %s, db %s)",
        url,
        time.monotonic() - t0,
        ",".join(physnets),
        args.db or "memory",
    )

    while not stop.wait(0.5):
        pass
    LOG.info("stopping")
    server.shutdown()
    server.server_close()
    logging.shutdown()
    # Skip the test case's cleanups (schema deletion, mock teardown): exit now.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
