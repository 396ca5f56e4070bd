"""GET /ui: the read-only console (service.edge.ui). Off with MONOSERVE_UI=false (then not routed: 404);
behind the API token when MONOSERVE_API_TOKEN is set, like /models. Rendered in a worker thread
(drawing a version's curves runs its model once, the first time)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request, Response

from service import __version__
from service.base.errors import ModelUnavailableError
from service.base.metrics import Metrics
from service.edge.ui import console
from service.edge.ui.window import MetricsWindow
from service.pipeline.endpoint import check_authorization

router = APIRouter(tags=["console"])

# No scripts, nothing fetched: inline styles and inline SVG only.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


@router.get("/ui", include_in_schema=False)
async def console_page(request: Request) -> Response:
    service = request.app.state.service
    check_authorization(service.settings, request.headers.get("authorization"))
    registry = service.registry
    if registry is None:
        raise ModelUnavailableError("models are still loading")
    window: MetricsWindow | None = getattr(request.app.state, "ui_window", None)
    minute = window.last_minute() if window is not None else None
    page = await to_thread.run_sync(console.render, registry, minute, __version__, limiter=service.limiter)
    return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)


def install(app: FastAPI, metrics: Metrics) -> None:
    """Route /ui and keep the metrics window its traffic table reads (started by the app's lifespan)."""
    app.include_router(router)
    app.state.ui_window = MetricsWindow(metrics)
