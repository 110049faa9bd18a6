"""Service wiring: builds the controller's parts from the configuration and runs them."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn

from medevac.api import create_app
from medevac.cloud import CloudDriver
from medevac.config import CloudConfig, Settings
from medevac.storage import Database

log = logging.getLogger(__name__)


def build_cloud_driver(cfg: CloudConfig) -> CloudDriver:
    return CloudDriver(
        cfg.name,
        clouds_yaml=cfg.clouds_yaml,
        max_workers=cfg.max_workers,
        call_timeout=cfg.call_timeout,
        compute_microversion_cap=cfg.microversion_cap(),
    )


class Controller:
    """One controller process: storage, API, and (as they land) the pipeline's blocks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.storage.url)
        self.cloud = build_cloud_driver(settings.cloud)

    async def run(self) -> None:
        """Migrate, serve until SIGTERM/SIGINT, then shut down cleanly."""
        await asyncio.to_thread(self.db.migrate)
        app = create_app(self.settings, self.db)
        config = uvicorn.Config(
            app,
            host=self.settings.api.host,
            port=self.settings.api.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        log.info(
            "medevac serving on http://%s:%d (storage %s)",
            self.settings.api.host,
            self.settings.api.port,
            self.db.display_url,
        )
        try:
            await server.serve()
        finally:
            await self.cloud.close()
            self.db.dispose()
