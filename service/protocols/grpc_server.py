"""The gRPC server of the Open Inference Protocol: `inference.GRPCInferenceService` (KServe's and
Triton's gRPC API) and grpc.health.v1, served by grpcio's asyncio server on MONOSERVE_GRPC_PORT in
the serving process.

ModelInfer goes through the one pipeline with service.protocols.grpc_oip's adapter; ModelStreamInfer
answers each request of a stream through service.protocols.grpc_stream. The repository RPCs follow
the REST control API's rule (service.pipeline.control.check_control_access: closed unless opened,
PERMISSION_DENIED when closed, UNAUTHENTICATED for a wrong token). grpc.health.v1: "" is SERVING
while the server runs (NOT_SERVING once it drains), "inference.GRPCInferenceService" while every
model has a valid version (/readyz).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

from service import __version__
from service.base.errors import BadRequestError, ModelUnavailableError, NotFoundError, ServiceError
from service.base.metrics import UNKNOWN_MODEL
from service.pipeline import endpoint as pipeline
from service.pipeline.control import check_control_access, grpc_peer_host
from service.protocols import oip
from service.protocols.grpc_oip import (
    GrpcInferAdapter,
    _metadata,
    abort,
    method_route,
    reply_message,
    run_pipeline,
)
from service.protocols.grpc_proto import PROTO_SERVICE, SERVICE_NAME, messages
from service.protocols.grpc_stream import StreamSession
from service.repository.lifecycle import raise_unless_newest_serves

if TYPE_CHECKING:
    from service.pipeline.service import Service
    from service.repository.lifecycle import Lifecycle

log = logging.getLogger(__name__)


# -- the service ------------------------------------------------------------------------------
class InferenceService:
    """The RPCs of inference.GRPCInferenceService, over the app's Service and Lifecycle."""

    def __init__(self, service: Service, lifecycle: Callable[[], Lifecycle | None]):
        self.service = service
        self.lifecycle = lifecycle
        self.pb = messages()

    # -- plumbing --
    async def _answer(self, context: grpc.aio.ServicerContext, method: str, work: Callable[[], Any]) -> Any:
        """`work()`'s answer; a ServiceError aborts with its status, anything else with INTERNAL (logged)."""
        try:
            result = work()
            return await result if asyncio.iscoroutine(result) else result
        except ServiceError as exc:
            self.service.metrics.count_request(method_route(method), UNKNOWN_MODEL, exc.status)
            await abort(context, exc.status, exc.message, exc.headers)
        except Exception:  # noqa: BLE001 - our bug: logged with its traceback, never sent
            log.exception("unexpected error in gRPC %s", method)
            self.service.metrics.count_request(method_route(method), UNKNOWN_MODEL, 500)
            await abort(context, 500, "internal server error", None)

    def _check_token(self, context: grpc.aio.ServicerContext) -> None:
        pipeline.check_authorization(self.service.settings, _metadata(context).get("authorization"))

    def _registry(self) -> Any:
        registry = self.service.registry
        if registry is None:
            raise ModelUnavailableError("models are still loading")
        return registry

    # -- health and metadata (open, like /v2/health/* and GET /v2) --
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        registry = self.service.registry
        return self.pb.ServerReadyResponse(ready=registry is not None and registry.ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.pb.ServerMetadataResponse(name="monoserve", version=__version__,
                                              extensions=["model_repository", "sequence"])

    # -- models (the API token, like GET /v2/models/...) --
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def ready() -> Any:
            self._check_token(context)
            registry = self._registry()
            entry = registry.models.get(request.name)
            if entry is None:  # unknown or unloaded: not ready (a readiness question has an answer)
                return self.pb.ModelReadyResponse(ready=False)
            try:
                number = oip.version_number(request.name, request.version or None)
            except NotFoundError:
                return self.pb.ModelReadyResponse(ready=False)
            return self.pb.ModelReadyResponse(ready=bool(entry.served) if number is None else number in entry.served)

        return await self._answer(context, "ModelReady", ready)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def metadata() -> Any:
            self._check_token(context)
            served = oip.resolve(self.service, request.name, request.version or None)
            registry = self._registry()
            body = oip.model_metadata(served, list(registry.model(request.name).served), registry.engine)
            tensor = self.pb.ModelMetadataResponse.TensorMetadata
            return self.pb.ModelMetadataResponse(
                name=body["name"], versions=body["versions"], platform=body["platform"],
                inputs=[tensor(**item) for item in body["inputs"]], outputs=[tensor(**item) for item in body["outputs"]])

        return await self._answer(context, "ModelMetadata", metadata)

    # -- infer: the one pipeline --
    async def ModelInfer(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        route = method_route("ModelInfer")
        reply = await run_pipeline(self.service, GrpcInferAdapter(self.service, route), body, _metadata(context))
        if reply.status != 200:
            await abort(context, reply.status, reply_message(reply), reply.headers)
        return reply.body

    async def ModelStreamInfer(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[bytes]:
        """One answer per request, in order; a failed request answers error_message and the stream goes on."""
        hub, metadata = self.service.streams, _metadata(context)
        try:
            # the token first, on the call's metadata: a call without it takes nothing (no slot, no budget)
            pipeline.check_authorization(self.service.settings, metadata.get("authorization"))
            hub.acquire()  # one of the worker's open streams (MONOSERVE_STREAM_MAX_OPEN), as a WebSocket stream is
        except ServiceError as exc:
            self.service.metrics.count_request(method_route("ModelStreamInfer"), UNKNOWN_MODEL, exc.status)
            await abort(context, exc.status, exc.message, exc.headers)
        session = StreamSession(self.service, metadata)
        try:
            async for body in session.messages(requests):  # ends the call after the idle timeout
                answer = await session.answer(body)
                refused = session.refused
                if refused is not None and session.grpc_errors:  # Triton's triton_grpc_error: the status ends it
                    await abort(context, refused.status, reply_message(refused), refused.headers)
                yield answer
        finally:
            session.close()
            hub.release()
        if session.idle_message is not None:
            await abort(context, 408, session.idle_message, None)

    # -- the model repository (the control API's token rule) --
    async def _control(self, context: grpc.aio.ServicerContext) -> Lifecycle:
        check_control_access(self.service.settings, _metadata(context).get("authorization"),
                             grpc_peer_host(context.peer()))
        lifecycle = self.lifecycle()
        if lifecycle is None:
            raise ModelUnavailableError("models are still loading")
        return lifecycle

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def index() -> Any:
            lifecycle = await self._control(context)
            rows = [row for row in lifecycle.registry.index() if row["state"] == "READY" or not request.ready]
            return self.pb.RepositoryIndexResponse(models=[self.pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

        return await self._answer(context, "RepositoryIndex", index)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def load() -> Any:
            lifecycle = await self._control(context)
            if request.parameters:
                raise BadRequestError("load takes no parameters here (no config or file overrides): publish the "
                                      "version into the repository with `monoserve export`, then load", field="parameters")
            if not request.model_name:
                raise BadRequestError("model_name must name the model to load", field="model_name")
            await lifecycle.load(request.model_name)
            entry = lifecycle.registry.models.get(request.model_name)
            if entry is None:
                raise BadRequestError(f"failed to load {request.model_name!r}: it has no version directories",
                                      model=request.model_name)
            raise_unless_newest_serves(entry)
            return self.pb.RepositoryModelLoadResponse()

        return await self._answer(context, "RepositoryModelLoad", load)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def unload() -> Any:
            lifecycle = await self._control(context)
            if not request.model_name:
                raise BadRequestError("model_name must name the model to unload", field="model_name")
            await lifecycle.unload(request.model_name)
            return self.pb.RepositoryModelUnloadResponse()

        return await self._answer(context, "RepositoryModelUnload", unload)


def handlers(servicer: InferenceService) -> grpc.GenericRpcHandler:
    """The RPCs of oip_v2.proto's service, registered under the protocol's name (SERVICE_NAME), with
    protobuf (de)serializers, but raw bytes in and out for the infer RPCs (the pipeline parses and
    serializes them, its limits counted first)."""
    pb = servicer.pb
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name[PROTO_SERVICE].methods:
        function = getattr(servicer, method.name)
        raw = method.input_type.name == "ModelInferRequest"
        deserialize = None if raw else getattr(pb, method.input_type.name).FromString
        serialize = None if raw else getattr(pb, method.output_type.name).SerializeToString
        if method.client_streaming and method.server_streaming:
            methods[method.name] = grpc.stream_stream_rpc_method_handler(function, deserialize, serialize)
        else:
            methods[method.name] = grpc.unary_unary_rpc_method_handler(function, deserialize, serialize)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


# -- health -----------------------------------------------------------------------------------
def health_servicer(service: Service) -> Any:
    from grpc_health.v1 import health_pb2
    from grpc_health.v1.health import aio as health_aio

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

    class Health(health_aio.HealthServicer):
        """"" : the server runs; SERVICE_NAME: every model has a valid version (read at each Check)."""

        async def refresh(self) -> None:
            registry = service.registry
            await self.set(SERVICE_NAME, serving if registry is not None and registry.ready else not_serving)

        async def Check(self, request: Any, context: Any) -> Any:
            await self.refresh()
            return await super().Check(request, context)

    return Health()


# -- the server -------------------------------------------------------------------------------
class GrpcServer:
    """The gRPC server of one serving process (one per uvicorn worker; they share the port)."""

    def __init__(self, server: grpc.aio.Server, health: Any, port: int, grace_s: float):
        self.server, self.health, self.port, self.grace_s = server, health, port, grace_s
        self._refresher: asyncio.Task | None = None

    async def _refresh_health(self) -> None:
        while True:  # for Watch streams: the readiness as it changes (Check reads it itself)
            await self.health.refresh()
            await asyncio.sleep(1.0)

    async def start(self) -> None:
        await self.server.start()
        self._refresher = asyncio.create_task(self._refresh_health())

    async def stop(self) -> None:
        """Drain: health NOT_SERVING, no new calls, calls in flight finish within the grace period."""
        if self._refresher is not None:
            self._refresher.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s)
        log.info("gRPC server on port %d stopped", self.port)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start_server(service: Service, lifecycle: Callable[[], Lifecycle | None]) -> GrpcServer:
    """Serve inference.GRPCInferenceService and grpc.health.v1 on settings.grpc_port (RuntimeError when
    the port cannot be bound: the process does not start half-served)."""
    from grpc_health.v1 import health_pb2_grpc

    settings = service.settings
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),  # the body limit, before any parse
        ("grpc.max_send_message_length", -1),
        # Worker processes share the port (the kernel spreads connections); one process alone owns
        # it, so a second server on the same port fails to start instead of silently sharing it.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        # fewer, larger writes per connection: +8-12% calls/s for small calls here (docs/performance.md)
        ("grpc.optimization_target", "throughput"),
    ]
    server = grpc.aio.server(options=options)
    servicer = InferenceService(service, lifecycle)
    server.add_generic_rpc_handlers((handlers(servicer),))
    health = health_servicer(service)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    target = address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot serve gRPC on {target}: {exc} (MONOSERVE_GRPC_PORT=0 turns gRPC off)") from None
    if port == 0:
        raise RuntimeError(f"cannot serve gRPC on {target} (MONOSERVE_GRPC_PORT=0 turns gRPC off)")
    running = GrpcServer(server, health, port, float(settings.graceful_shutdown_s))
    await running.start()
    log.info("gRPC (inference.GRPCInferenceService, grpc.health.v1) on %s", target)
    return running
