"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from service.edge.routes.deps import MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse,  # documented as the text it is (schemathesis checks)
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=metrics.content_type)
