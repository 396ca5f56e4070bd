"""The FastAPI app factory: `create_app(settings=None)`.

Models are proved and loaded in the lifespan (service.repository.registry), kept on app.state and injected
into routes; the lifespan also runs the repository poller (service.repository.lifecycle); domain exceptions
answer {"error": message, ...} with their status.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.base import codec, context as request_context, tracing
from service.edge import fastpath
from service.protocols import native, stream_ws
from service.compute.engines import resolve_device
from service.compute.kinds import SERVICE_KINDS
from service.base.errors import ServiceError
from service.repository.lifecycle import Lifecycle
from service.base.metrics import UNKNOWN_MODEL, Metrics, mark_worker_dead
from service.repository.registry import ModelRegistry
from service.pipeline.service import Service
from service.settings import Settings, get_settings

log = logging.getLogger("service")


def _route_label(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _error_response(request: Request, status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    metrics: Metrics = request.app.state.service.metrics
    model = getattr(request.state, "model", None) or UNKNOWN_MODEL
    metrics.count_request(_route_label(request), model, status)
    request_id = request_context.current_id()
    if request_id is not None:
        body = {**body, "request_id": request_id}
    return Response(codec.dumps(body), status_code=status, media_type=codec.JSON_MEDIA_TYPE, headers=headers)


def register_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return _error_response(request, exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body"))
            problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return _error_response(request, 400, {"error": "invalid request: " + "; ".join(problems), "problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(request, exc.status_code, {"error": str(exc.detail)}, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_response(request, 500, {"error": f"internal server error ({type(exc).__name__})"})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    settings, metrics = service.settings, service.metrics
    try:
        device = resolve_device(settings.engine, settings.device)
    except Exception as exc:
        log.error("cannot start: %s", exc)
        raise
    threads = settings.threads_per_worker
    log.info("loading %s with engine %s on %s (%d inference thread(s) per worker)", settings.repo, settings.engine, device, threads)

    def refused(name: str, report) -> None:
        if not report.ok and report.failed_step is not None:
            metrics.load_refusals.labels(name, report.failed_step.step).inc()

    from contract.signing import TrustedKeys

    try:
        trusted_keys = TrustedKeys.from_setting(settings.trusted_keys)
    except ValueError as exc:
        log.error("cannot start: MONOSERVE_TRUSTED_KEYS: %s", exc)
        raise
    if trusted_keys is not None:
        log.info("versions must be signed by one of: %s", ", ".join(trusted_keys.describe()))
    registry = ModelRegistry(settings.repo, engine=settings.engine, device=device, threads=threads,
                             defaults={kind: settings.default_model(kind) for kind in SERVICE_KINDS}, on_version=refused,
                             policy=settings.policy, trusted_keys=trusted_keys)
    lifecycle = Lifecycle(registry, metrics, service.batchers, settings.poll_interval_s)
    await lifecycle.refresh()
    service.limiter = anyio.CapacityLimiter(max(1, threads))
    service.registry = registry
    app.state.lifecycle = lifecycle
    from service.pipeline.control import control_is_open

    if not control_is_open(settings):
        log.info("model control API off (POST /v2/repository/... answers 403): set MONOSERVE_ADMIN_TOKEN to open it")
    if registry.ready:
        log.info("ready: %s", ", ".join(f"{n} v{e.latest.manifest.version}" for n, e in registry.models.items()))
    else:
        log.error("not ready: %s", "; ".join(registry.not_ready_reasons()))
    # What startup made (modules, FastAPI, the first versions) lives about as long as the process:
    # out of the collector's sight, a full collection walks only what came after (measured: a full
    # collection took ~30 ms, 6-9 us per small request; now well under 1 ms). Unfrozen at shutdown,
    # so that an app stopped inside a longer-lived process (tests) leaves nothing uncollectable.
    gc.collect()
    gc.freeze()
    lifecycle.start()  # after the first load: a new version is proved and swapped in while serving
    ui_window = getattr(app.state, "ui_window", None)  # GET /ui's last minute of metrics (service.edge.ui.window)
    if ui_window is not None:
        ui_window.start()
    grpc_server = None
    try:
        if app.state.serve_grpc and settings.grpc_port:  # the serving process (serving_app), not in-process apps
            from service.protocols.grpc_server import start_server  # grpcio is imported only where gRPC is served

            grpc_server = await start_server(service, lambda: app.state.lifecycle)
        yield
    finally:
        if grpc_server is not None:  # drained first: its calls in flight still need the models
            await grpc_server.stop()
        if ui_window is not None:
            await ui_window.stop()
        gc.unfreeze()
        tracing.shutdown()
        await lifecycle.stop()
        service.registry = None
        app.state.lifecycle = None
        registry.close()
        mark_worker_dead()


class MonoserveApp(FastAPI):
    """FastAPI, with POST /smooth and /classify answered by service.edge.fastpath before FastAPI's own
    request handling (the same code and answers as the FastAPI routes, at a fraction of the cost;
    docs/performance.md). MONOSERVE_HOT_PATH=false sends them through the FastAPI routes. The
    WebSocket /smooth/stream is always answered by service.protocols.stream_ws (raw ASGI).
    `hot_lane`: the same hot routes for the serving process's HTTP protocol (service.edge.http),
    which answers them before building an ASGI request at all."""

    hot_lane: fastpath.HotLane | None = None

    async def __call__(self, scope, receive, send) -> None:
        service: Service = self.state.service
        lane = self.hot_lane  # None when MONOSERVE_HOT_PATH=false
        adapter = fastpath.hot_route(lane, scope) if lane is not None else None
        if adapter is not None:
            await fastpath.answer_hot(service, scope, receive, send, adapter)  # sets its own request context
            return
        if stream_ws.is_stream(scope):  # WebSocket /smooth/stream (raw ASGI: close codes, backpressure)
            await stream_ws.serve_stream(service, scope, receive, send)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        context = request_context.begin(request_context.from_scope(scope))
        id_header = (request_context.HEADER_BYTES, context.id.encode("latin-1"))

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                context.status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await super().__call__(scope, receive, send_with_id)
        request_context.finish(context, scope["method"], scope["path"], lambda: (
            getattr(scope.get("route"), "path", None) or "unmatched", tracing.headers_of_scope(scope)))


def serving_app() -> FastAPI:
    """The serving process's app (service.server): create_app() plus the Open Inference Protocol's
    gRPC service on MONOSERVE_GRPC_PORT (service.protocols.grpc_oip), started and drained by the lifespan."""
    return create_app(serve_grpc=True)


def create_app(settings: Settings | None = None, *, serve_grpc: bool = False) -> FastAPI:
    from service import __version__
    from service.edge.routes import explain, health, metrics, models, oip, predict, repository, ui
    from service.edge.routes.docs import mount_docs

    settings = settings or get_settings()
    if not logging.getLogger().handlers:  # no logging set up (service.server passes its own config to uvicorn)
        request_context.configure_logging(settings.log_format, settings.log_level, settings.access_log)
    logging.getLogger("service").setLevel(settings.log_level.upper())
    request_context.access_log.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    app = MonoserveApp(
        title="monoserve",
        version=__version__,
        description="Serve constrained (monotone, nonnegative) models, each proved from its artifact at load.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    tracing.setup_from_environment()  # OTEL_* settings; off (and nothing imported) by default
    app.state.service = Service(settings=settings, metrics=Metrics())
    app.state.lifecycle = None  # set by the lifespan once the repository is loaded
    app.state.serve_grpc = serve_grpc
    # the hot routes and their kept adapters: for this app's ASGI hot path, and for service.edge.http's
    # protocol, which answers them below ASGI (None: the hot path is off, every request goes to FastAPI)
    app.hot_lane = fastpath.HotLane(app.state.service) if settings.hot_path else None
    register_error_handlers(app)
    app.include_router(predict.router)
    for kind_route in native.add_kind_routes(SERVICE_KINDS):  # the routes registered kinds declare (ServiceKind.route)
        predict.add_kind_route(app, kind_route)
    app.include_router(models.router)
    app.include_router(repository.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(oip.router)  # Open Inference Protocol v2
    app.include_router(explain.router)  # POST /explain and its OIP extension (service.protocols.explain)
    app.state.ui_window = None
    if settings.ui:  # GET /ui, the read-only console
        ui.install(app, app.state.service.metrics)
    mount_docs(app)
    return app
