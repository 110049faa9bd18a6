"""Emulated Redfish BMCs on loopback HTTP: one service per host, one ComputerSystem each.

What a fencing client needs of DMTF Redfish, no more: the service root (open),
``/redfish/v1/Systems`` and the system with its ``PowerState`` (basic auth), and the
``#ComputerSystem.Reset`` action (``On``, ``ForceOff``, ``GracefulShutdown``,
``ForceRestart``) reaching the lab's fault model through the same power hooks as the
IPMI BMCs. An unreachable BMC closes every connection without an answer.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from medevac.lab.bmc_emulator import BmcSpec, PowerHooks

LOG = logging.getLogger(__name__)
ROOT = "/redfish/v1"
RESET_TYPES = ("On", "ForceOff", "GracefulShutdown", "ForceRestart")


class RedfishBmc:
    def __init__(self, host: str, username: str, password: str, hooks: PowerHooks) -> None:
        self.host, self.hooks = host, hooks
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.reachable = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.spec = BmcSpec(host, int(self.server.server_address[1]), username, password)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"redfish-{host}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    # -- resources --------------------------------------------------------------------

    def _root(self) -> dict[str, Any]:
        return {
            "@odata.id": f"{ROOT}/",
            "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
            "Id": "RootService",
            "Name": "Root Service",
            "RedfishVersion": "1.6.0",
            "UUID": "00000000-0000-4000-8000-" + self.host.encode().hex()[:12].rjust(12, "0"),
            "Systems": {"@odata.id": f"{ROOT}/Systems"},
        }

    def _systems(self) -> dict[str, Any]:
        return {
            "@odata.id": f"{ROOT}/Systems",
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Computer System Collection",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": f"{ROOT}/Systems/{self.host}"}],
        }

    def _system(self) -> dict[str, Any]:
        on = self.hooks.power_state(self.host)
        path = f"{ROOT}/Systems/{self.host}"
        return {
            "@odata.id": path,
            "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
            "Id": self.host,
            "Name": self.host,
            "PowerState": "On" if on else "Off",
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": f"{path}/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": list(RESET_TYPES),
                }
            },
        }

    def _reset(self, kind: str) -> None:
        if kind == "On":
            self.hooks.power_on(self.host)
        elif kind == "ForceOff":
            self.hooks.power_off(self.host)
        elif kind == "GracefulShutdown":
            self.hooks.power_soft(self.host)
        else:
            self.hooks.power_reset(self.host)

    # -- HTTP -------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        bmc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("OData-Version", "4.0")
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="redfish"')
                if self.headers.get("Connection", "").lower() == "close":
                    self.send_header("Connection", "close")  # so the client does not reuse it
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                self._send(status, {"error": {"code": "Base.1.8.GeneralError", "message": message}})

            def _gate(self, *, open_: bool = False) -> bool:
                if not bmc.reachable:
                    self.close_connection = True
                    self.connection.close()  # no answer at all
                    return False
                if open_:
                    return True
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), bmc._auth.encode()):
                    self._error(401, "authentication required")
                    return False
                return True

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path == ROOT:
                    if self._gate(open_=True):
                        self._send(200, bmc._root())
                    return
                if not self._gate():
                    return
                if path == f"{ROOT}/Systems":
                    self._send(200, bmc._systems())
                elif path == f"{ROOT}/Systems/{bmc.host}":
                    self._send(200, bmc._system())
                else:
                    self._error(404, f"no resource at {path}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""  # before any answer
                if not self._gate():
                    return
                path = self.path.rstrip("/")
                if path != f"{ROOT}/Systems/{bmc.host}/Actions/ComputerSystem.Reset":
                    self._error(404, f"no action at {path}")
                    return
                try:
                    kind = json.loads(raw or b"{}").get("ResetType")
                except (ValueError, AttributeError):
                    self._error(400, "the body is not a JSON object")
                    return
                if kind not in RESET_TYPES:
                    self._error(400, f"ResetType must be one of {', '.join(RESET_TYPES)}")
                    return
                bmc._reset(kind)
                self._send(204)

            def log_message(self, fmt: str, *args: Any) -> None:
                LOG.debug("redfish %s: " + fmt, bmc.host, *args)

        return Handler
