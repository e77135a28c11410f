"""Running the service under uvicorn, with a graceful drain on SIGTERM.

On SIGTERM the service first reports not-ready (so a load balancer stops sending), keeps serving for
`drain_s`, then stops accepting, lets in-flight requests finish and exits 0. uvicorn by itself would
re-raise the signal after shutting down, ending the process with a signal status instead of 0.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import uvicorn

from imagenet_zoo.server.app import create_app
from imagenet_zoo.server.service import Service
from imagenet_zoo.server.settings import Settings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service, drain_s: float) -> None:
        super().__init__(config)
        self._service, self._drain_s = service, drain_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._service.draining:
            self.should_exit = True  # Ctrl-C, or a second SIGTERM: stop now (in-flight requests still finish)
            return
        self._service.draining = True
        threading.Timer(self._drain_s, self._stop).start()

    def _stop(self) -> None:
        self.should_exit = True


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    drain_s: float,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Run the service; `access_log` logs a line per request (off by default: at hundreds of requests a
    second it costs the event loop, and /metrics counts requests by route and status)."""
    app = create_app(settings)
    app.state.service.prepare()  # here, so that what cannot be made is a typed error, not a traceback
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=int(settings.deadline_s) + 1,
    )
    DrainingServer(config, app.state.service, drain_s).run()
