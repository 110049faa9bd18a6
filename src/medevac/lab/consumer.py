"""A VNF manager stand-in: receives Aodh webhooks and records when each arrived.

Runs as its own process (``python -m medevac.lab.consumer --port N``) so its work
never shares a CPU slice with the controller it measures. ``GET /_consumer/received`` lists
every webhook with its receive time; ``POST /_consumer/down`` and ``/_consumer/up`` make it refuse
webhooks (503) for outage tests, ``POST /_consumer/slow {"seconds": s}`` makes it
answer late; duplicates (same delivery id) are counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def doctor_alarm(server_id: str, name: str, url: str) -> dict[str, Any]:
    """The alarm OPNFV Doctor's consumer registers for one server: fire when the
    server's ``compute.instance.update`` says ``state`` = error."""
    return {
        "name": f"{name}-failure",
        "type": "event",
        "severity": "moderate",
        "repeat_actions": False,
        "alarm_actions": [url],
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [
                {"field": "traits.instance_id", "type": "", "op": "eq", "value": server_id},
                {"field": "traits.state", "type": "", "op": "eq", "value": "error"},
            ],
        },
    }


class Consumer:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.refusing = False
        self.refused = 0
        self.delay = 0.0  # seconds each webhook waits before its answer (a slow consumer)

    async def webhook(self, request: Request) -> Response:
        at = time.time()
        if self.refusing:
            self.refused += 1
            return Response(status_code=503)
        body = await request.body()
        if self.delay:
            await asyncio.sleep(self.delay)
        delivery = request.headers.get("x-medevac-delivery-id", "")
        if delivery and delivery in self.seen:
            self.duplicates += 1
            return Response(status_code=200)
        self.seen.add(delivery)
        payload = json.loads(body)
        event = payload.get("reason_data", {}).get("event", {})
        self.received.append(
            {
                "at": at,
                "path": request.url.path,
                "delivery_id": delivery,
                "alarm_id": payload.get("alarm_id"),
                "alarm_name": payload.get("alarm_name"),
                "current": payload.get("current"),
                "event_type": event.get("event_type"),
                "traits": {t[0]: t[2] for t in event.get("traits", [])},
            }
        )
        return Response(status_code=200)

    async def listing(self, _: Request) -> JSONResponse:
        return JSONResponse(
            {
                "received": self.received,
                "duplicates": self.duplicates,
                "refused": self.refused,
            }
        )

    async def down(self, _: Request) -> JSONResponse:
        self.refusing = True
        return JSONResponse({"refusing": True})

    async def up(self, _: Request) -> JSONResponse:
        self.refusing = False
        return JSONResponse({"refusing": False})

    async def slow(self, request: Request) -> JSONResponse:
        self.delay = float((await request.json()).get("seconds", 0))
        return JSONResponse({"delay": self.delay})

    async def reset(self, _: Request) -> JSONResponse:
        self.received.clear()
        self.seen.clear()
        self.duplicates = self.refused = 0
        return JSONResponse({"reset": True})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/_consumer/received", self.listing, methods=["GET"]),
                Route("/_consumer/down", self.down, methods=["POST"]),
                Route("/_consumer/up", self.up, methods=["POST"]),
                Route("/_consumer/reset", self.reset, methods=["POST"]),
                Route("/_consumer/slow", self.slow, methods=["POST"]),
                Route("/{path:path}", self.webhook, methods=["POST"]),
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        Consumer().app(), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
