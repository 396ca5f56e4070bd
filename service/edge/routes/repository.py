"""The model control API, in Triton's shape (KServe/Triton "model repository extension"):

POST /v2/repository/index                      -> [{"name", "version", "state", "reason"}, ...]
POST /v2/repository/models/{name}/load         -> prove the model's versions now and serve the newest
POST /v2/repository/models/{name}/unload       -> stop serving it (the poller leaves it alone)

Closed unless the operator opens it (service.pipeline.control.check_control_access: MONOSERVE_ADMIN_TOKEN,
or the explicit MONOSERVE_CONTROL_ACCEPTS_API_TOKEN / MONOSERVE_UNSAFE_CONTROL_LOOPBACK): 403 when
closed, 401 for a missing or wrong token.
A load that leaves the newest version refused answers 400 naming the reason, while the version
that served before keeps serving; 404 for a name with no directory in the repository.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from service.base import codec
from service.base.errors import BadRequestError, ModelUnavailableError, PayloadTooLargeError
from service.repository.lifecycle import Lifecycle, raise_unless_newest_serves
from service.pipeline.control import check_control_access

router = APIRouter(prefix="/v2/repository", tags=["model control"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad body, or the model's newest version was refused (the reason is given)"},
    401: {"description": "missing or wrong admin token"},
    403: {"description": "the control API is off (set MONOSERVE_ADMIN_TOKEN), or loopback-only"}, 404: {"description": "no such model directory"},
    503: {"description": "models are still loading"}}


async def get_lifecycle(request: Request) -> Lifecycle:
    """The lifecycle manager, after the control access check (403 closed, 401 wrong token) and once
    models are loaded (503 before)."""
    client = request.client
    check_control_access(request.app.state.service.settings, request.headers.get("authorization"),
                         client.host if client is not None else None)
    lifecycle: Lifecycle | None = getattr(request.app.state, "lifecycle", None)
    if lifecycle is None:
        raise ModelUnavailableError("models are still loading")
    return lifecycle


LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]


# Control bodies are tiny ({"ready": true}, {"parameters": {...}}): a small cap, checked while
# reading, so an open control API cannot be made to hold a large body in memory.
MAX_CONTROL_BODY_BYTES = 64 * 1024


async def _json_body(request: Request) -> dict[str, Any]:
    """The optional JSON object of a control request ({} when empty), at most MAX_CONTROL_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CONTROL_BODY_BYTES:
        raise PayloadTooLargeError(f"control request body of {declared} bytes exceeds {MAX_CONTROL_BODY_BYTES} bytes",
                                   limit=MAX_CONTROL_BODY_BYTES)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_CONTROL_BODY_BYTES:
            raise PayloadTooLargeError(f"control request body exceeds {MAX_CONTROL_BODY_BYTES} bytes",
                                       limit=MAX_CONTROL_BODY_BYTES)
    return codec.loads_object(bytes(raw)) if raw.strip() else {}


def _json(body: Any, status: int = 200) -> Response:
    return Response(codec.dumps(body), status_code=status, media_type=codec.JSON_MEDIA_TYPE)


@router.post("/index", responses=ERRORS)
async def repository_index(request: Request, lifecycle: LifecycleDep) -> Response:
    """Every model version and its state (READY or UNAVAILABLE, with the reason); {"ready": true}
    lists only the versions that serve."""
    body = await _json_body(request)
    ready_only = body.get("ready", False)
    if not isinstance(ready_only, bool):
        raise BadRequestError(f"'ready' must be true or false, got {ready_only!r}", field="ready")
    rows = lifecycle.registry.index()
    return _json([row for row in rows if row["state"] == "READY"] if ready_only else rows)


@router.post("/models/{name}/load", responses=ERRORS)
async def load_model(name: str, request: Request, lifecycle: LifecycleDep) -> Response:
    """Prove the model's new, changed and refused versions now, and serve its newest valid one."""
    body = await _json_body(request)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict) or parameters:
        # Triton's load can carry a model config or files: this server loads from the repository only.
        raise BadRequestError("load takes no parameters here (no config or file overrides): publish the version "
                              "into the repository with `monoserve export`, then load", field="parameters")
    await lifecycle.load(name)
    entry = lifecycle.registry.models.get(name)
    if entry is None:
        raise BadRequestError(f"failed to load {name!r}: it has no version directories", model=name)
    raise_unless_newest_serves(entry)
    return _json(entry.summary())


@router.post("/models/{name}/unload", responses=ERRORS)
async def unload_model(name: str, request: Request, lifecycle: LifecycleDep) -> Response:
    """Stop serving the model: requests in flight finish on it; load serves it again."""
    await _json_body(request)  # Triton's optional {"parameters": {"unload_dependents": ...}}: nothing depends here
    await lifecycle.unload(name)
    return _json({"name": name, "state": "unloaded"})
