"""POST /smooth and POST /classify as FastAPI routes: their OpenAPI documentation, and the
answers when the hot path is off. Both call the one endpoint pipeline (service.pipeline.endpoint with the
adapters of service.protocols.native), as service.edge.fastpath does: the body is read raw (no pydantic model
over big lists), decoded once into numpy, and answered with orjson or .npy bytes. The pydantic
models below document the bodies; they do not parse them.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from service.base import codec
from service.protocols import native
from service.pipeline import endpoint as pipeline

router = APIRouter(tags=["inference"])


class SmoothRequest(BaseModel):
    """Documentation only: the body is parsed straight into numpy, not through this model."""

    signal: list[float] | list[list[float]] | list[list[list[float]]] = Field(
        description="[L], [C, L] or [B, C, L]; the answer keeps the nesting", examples=[[1.0, 2.0, 4.0, 8.0, 4.0, 2.0, 1.0]])
    model: str | None = Field(None, description="model name (default: the repository's smoother)")
    version: int | None = Field(None, description="model version (default: the newest valid one)")
    mode: Literal["same", "causal", "valid"] | None = Field(None, description="edge mode (default: the model's)")
    stream: bool | None = Field(None, description="true: start a stream ('signal' is its first [C, n] chunk; "
                                "the answer carries its 'state'); docs/service.md, Streaming")
    state: str | None = Field(None, description="continue the stream this state (from the previous answer) carries")
    end: bool | None = Field(None, description="true: the stream's last chunk: the answer adds the flushed tail")


class SmoothResponse(BaseModel):
    model: str
    version: int
    mode: str
    smoothed: list[float] | list[list[float]] | list[list[list[float]]]
    state: str | None = Field(None, description="a stream's state, for its next chunk (absent once it ended)")
    end: bool | None = Field(None, description="streams only: whether this answer ended the stream")


class ClassifyRequest(BaseModel):
    instances: list[list[float]] | list[dict[str, float]] = Field(
        description="rows of feature values in the manifest's order, or objects keyed by feature name")
    model: str | None = None
    version: int | None = None


class ClassifyResponse(BaseModel):
    model: str
    version: int
    scores: list[float] | list[list[float]] = Field(description="probabilities; one list per instance with several labels")
    labels: list[str] = Field(description="the model's labels, in the order of each instance's scores")
    threshold: float | list[float] = Field(
        description="a label is decided for an instance when its score >= threshold: one number for every label, "
                    "or one per label in `labels` order (multi-label models with per-label thresholds)")
    decisions: list[list[str]] = Field(description="per instance, the labels whose score reaches the threshold ([] for none)")


class ScoreRequest(BaseModel):
    instances: list[list[float]] | list[dict[str, float]] = Field(
        description="rows of feature values in the manifest's order, or objects keyed by feature name")
    model: str | None = None
    version: int | None = None


class ScoreResponse(BaseModel):
    model: str
    version: int
    scores: list[float] = Field(description="the regressor's score of each instance")


class ErrorResponse(BaseModel):
    """Every error: a message, and fields such as `field`, `index`, `limit` naming what was wrong."""

    model_config = ConfigDict(extra="allow")
    error: str


def _docs(schema: type[BaseModel], npy_note: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAPI for a raw-body route: the JSON schema, the .npy alternative and the query parameters
    (read from request.query_params by hand: FastAPI's per-parameter validation costs on every request)."""
    return {"requestBody": {"required": True, "content": {
        codec.JSON_MEDIA_TYPE: {"schema": schema.model_json_schema()},
        codec.NPY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary", "description": npy_note}},
    }}, "parameters": parameters}


def _query_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


MODEL_PARAMETERS = [
    _query_parameter("model", {"type": "string"}, "model name (for .npy bodies; JSON bodies may carry it)"),
    _query_parameter("version", {"type": "integer", "minimum": 1}, "model version (default: the newest valid one)"),
]
MODE_PARAMETER = _query_parameter("mode", {"type": "string", "enum": ["same", "causal", "valid"]}, "edge mode")
STREAM_PARAMETERS = [  # .npy bodies of a stream (service.protocols.stream_http); the state goes in the X-Stream-State header
    _query_parameter("stream", {"type": "boolean"}, "true: start a stream (the answer's X-Stream-State continues it)"),
    _query_parameter("end", {"type": "boolean"}, "true: end the stream (the answer adds the flushed tail)"),
    {"name": "X-Stream-State", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "the state of the stream this .npy chunk continues (from the previous answer's header)"},
]


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse, "description": text} for status, text in {
    400: "bad input (malformed body, wrong shape, non-numbers, unknown field or query parameter)",
    401: "missing or wrong token", 404: "unknown model or version", 408: "the body did not arrive in time",
    409: "a stream's pinned model version no longer serves",
    413: "body, values, rows or signal over a limit", 415: "unsupported content type or content encoding",
    503: "no valid model version, or busy (Retry-After)"}.items()}


async def _answer(request: Request, adapter: pipeline.ProtocolAdapter) -> Response:
    """The FastAPI side of the one endpoint pipeline (service.pipeline.endpoint): same reader, limits, errors."""
    service = request.app.state.service
    reply = await pipeline.handle(service, adapter, request.receive, request.headers, request.scope.get("query_string", b""))
    if reply is None:  # the client went away: nobody reads this
        return Response(status_code=400)
    return Response(pipeline.body_bytes(reply.body), status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


@router.post("/smooth", response_model=SmoothResponse, responses=ERRORS,
             openapi_extra=_docs(SmoothRequest, ".npy of float32/float64, 1-3 dims; model/version/mode as query parameters",
                                 [*MODEL_PARAMETERS, MODE_PARAMETER, *STREAM_PARAMETERS]))
async def smooth(request: Request) -> Response:
    """Smooth a signal: [L], [C, L] or [B, C, L] -> the same nesting, per edge mode."""
    return await _answer(request, native.SMOOTH)


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS,
             openapi_extra=_docs(ClassifyRequest, ".npy of float32/float64 [N, n_features]; model/version as query parameters",
                                 MODEL_PARAMETERS))
async def classify(request: Request) -> Response:
    """Score instances: probabilities per label, the labels that pass the threshold per instance, the threshold."""
    return await _answer(request, native.CLASSIFY)


@router.post("/score", response_model=ScoreResponse, responses=ERRORS,
             openapi_extra=_docs(ScoreRequest, ".npy of float32/float64 [N, n_features]; model/version as query parameters",
                                 MODEL_PARAMETERS))
async def score(request: Request) -> Response:
    """Score instances with a regressor (trees, linear or neural): one number per instance."""
    return await _answer(request, native.SCORE)


def add_kind_route(app: Any, adapter: Any) -> None:
    """POST adapter.route for a kind added by service.compute.kinds.register_kind (wire "rows"), the
    same pipeline as the routes above; documented as taking /classify's body."""

    async def answer(request: Request) -> Response:
        return await _answer(request, adapter)

    app.add_api_route(adapter.route, answer, methods=["POST"], tags=["inference"], responses=ERRORS,
                      summary=f"Run a {adapter.kind} model on instances",
                      openapi_extra=_docs(ScoreRequest, ".npy of float32/float64 [N, n_features]", MODEL_PARAMETERS))
