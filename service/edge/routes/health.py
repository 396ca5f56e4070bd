"""GET /healthz (the process is alive) and GET /readyz (every model has a valid version)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.base import codec

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"alive"}', media_type=codec.JSON_MEDIA_TYPE)


@router.get("/readyz", responses={503: {"description": "not ready, with the reasons"}})
async def readyz(request: Request) -> Response:
    registry = request.app.state.service.registry
    if registry is not None and registry.ready:
        models = registry.models
        serving = {name: entry.latest.manifest.version for name, entry in models.items() if entry.latest}
        body: dict = {"status": "ready", "models": serving}
        unavailable = {name: entry.reason for name, entry in models.items() if not entry.latest}
        if unavailable:  # new names that never served (service.repository.registry: readiness)
            body["unavailable"] = unavailable
        return Response(codec.dumps(body), media_type=codec.JSON_MEDIA_TYPE)
    reasons = ["models are still loading"] if registry is None else registry.not_ready_reasons()
    return Response(codec.dumps({"error": "not ready: " + "; ".join(reasons), "reasons": reasons}),
                    status_code=503, media_type=codec.JSON_MEDIA_TYPE)
