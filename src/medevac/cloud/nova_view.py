"""Nova's view of every compute service, as the monitor keeps it."""

from __future__ import annotations

from typing import Any

from medevac.cloud.driver import CloudDriver


class CloudNovaView:
    def __init__(self, driver: CloudDriver) -> None:
        self._driver = driver

    async def compute_services(self) -> dict[str, dict[str, Any]]:
        return {
            svc.host: {
                "state": svc.state,
                "status": svc.status,
                "forced_down": svc.forced_down,
                "updated_at": svc.updated_at.isoformat() if svc.updated_at else None,
            }
            for svc in await self._driver.list_compute_services()
        }
