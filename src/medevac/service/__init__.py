"""Service wiring: builds the controller's parts from the configuration and runs them.

``build`` maps the configuration to each block, ``audit`` writes the audit log off the
loop, ``controller`` runs one controller process. Arrows point down: the wiring
imports blocks and edges, never a surface (the command line passes the API).
"""

from medevac.service.audit import AuditLog, VerdictAudit, VerdictFanout
from medevac.service.build import (
    bmc_thread_pool,
    build_bmc_clients,
    build_cloud_driver,
    build_inspector,
    build_notifier,
    host_group,
    monitor_settings,
    retention_policy,
)
from medevac.service.controller import AppFactory, Controller

__all__ = [
    "AppFactory",
    "AuditLog",
    "Controller",
    "VerdictAudit",
    "VerdictFanout",
    "bmc_thread_pool",
    "build_bmc_clients",
    "build_cloud_driver",
    "build_inspector",
    "build_notifier",
    "host_group",
    "monitor_settings",
    "retention_policy",
]
