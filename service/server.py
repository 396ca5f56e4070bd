"""The serving process: `python -m service.server` runs uvicorn with every setting from the
environment (`MONOSERVE_*`, service.settings). `monoserve serve` builds that environment
explicitly and execs this module, so the process that called it never has its own os.environ
changed, and the malloc and BLAS variables are in place before the interpreter starts."""

from __future__ import annotations

import logging
import os
import secrets
import sys

log = logging.getLogger(__name__)


def main() -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.base.context import logging_config
    from service.edge.http import protocol_class
    from service.base.metrics import multiprocess_mode
    from service.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"monoserve: error: invalid MONOSERVE_* setting: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1 and settings.stream_secret is None:
        # one random stream state key for all workers of this server (a state works on any of them)
        os.environ["MONOSERVE_STREAM_SECRET"] = secrets.token_hex(32)
    with multiprocess_mode(settings.workers):  # /metrics counts across the worker processes
        uvicorn.run(
            "service.app:serving_app", factory=True, host=settings.host, port=settings.port, workers=settings.workers,
            log_level=settings.log_level.lower(), access_log=False, proxy_headers=False,
            log_config=logging_config(settings.log_format, settings.log_level, settings.access_log),
            server_header=False, date_header=False, http=protocol_class(settings.http),
            timeout_keep_alive=settings.keep_alive_timeout_s, timeout_graceful_shutdown=settings.graceful_shutdown_s,
            # /smooth/stream: frames over the limit are refused by the protocol before they are read
            # (close 1009); no per-message compression (float32 barely compresses; it costs CPU)
            ws_max_size=settings.stream_max_frame_bytes, ws_per_message_deflate=False,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
