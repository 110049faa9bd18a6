"""Run in the lab's venv: masakari-monitors 22.0.0's own code reports to a Masakari API.

Usage: python masakari_monitors_send.py <config file> <host down> <server uuid>

Its host monitor's event for ``<host down>`` gone offline (IPMI check off, as
``disable_ipmi_check`` does), its process monitor watching a ``nova-compute`` that
does not run and whose restarts fail, and its instance monitor's callback for a
server's domain that died: each sent by masakari-monitors' SendNotification, unchanged.
"""

from __future__ import annotations

import socket
import sys

import masakarimonitors.conf
from masakarimonitors.hostmonitor.host_handler.handle_host import HandleHost
from masakarimonitors.instancemonitor.libvirt_handler.callback import Callback
from masakarimonitors.processmonitor.process_handler.handle_process import HandleProcess
from oslo_utils import timeutils

CONF = masakarimonitors.conf.CONF


def main(config: str, host_down: str, server: str) -> None:
    CONF(["--config-file", config], project="masakarimonitors")
    hosts = HandleHost()
    event = hosts._make_event(host_down, "offline")
    hosts.notifier.send_notification(CONF.host.api_retry_max, CONF.host.api_retry_interval, event)

    processes = HandleProcess()
    processes.set_process_list(
        [
            {
                "process_name": "/usr/local/bin/nova-compute --medevac-test-absent",
                "start_command": "false",
                "pre_start_command": None,
                "post_start_command": None,
                "restart_command": "false",
                "pre_restart_command": None,
                "post_restart_command": None,
                "run_as_root": False,
            }
        ]
    )
    down = processes.monitor_processes()
    assert down, "the process list's process runs"
    processes.restart_processes(down)  # fails, so the monitor reports it

    Callback().libvirt_event_callback(
        "LIFECYCLE", "STOPPED_FAILED", server, "VM", socket.gethostname(), timeutils.utcnow()
    )
    print("sent")


if __name__ == "__main__":
    main(*sys.argv[1:4])
