"""OpenTelemetry tracing: off by default, on with the standard OTEL_* settings.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`; not `none`) or an OTLP
endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), unless
`OTEL_SDK_DISABLED=true`. The SDK reads the rest itself: `OTEL_SERVICE_NAME` (default here
"monoserve"), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
`OTEL_EXPORTER_OTLP_*`. Needs the `tracing` extra (opentelemetry-sdk), and the `otlp` extra for
the OTLP exporter; without them the service runs untraced and says so once in its log.

What is traced: one span per HTTP request ("POST /classify", kind SERVER) with the request ID,
route, status, model and version as attributes, child of the caller's span when the request
carries a W3C `traceparent`; for inference requests, one child span per pipeline stage: read
(the body), decode, resolve (model version, shape checks), infer or batch (the dynamic batcher's
queue wait and shared engine call), encode.

Cost when off: nothing is imported, and the pipeline checks one `None` per stage. When on, the
stages note perf_counter_ns() marks while the request runs, and the spans are made from them once
the answer is sent (start and end times given explicitly), so the request's own path never waits
on the SDK.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None  # an opentelemetry Tracer when tracing is on
_provider: Any = None  # the TracerProvider we made (shut down with the app)
_propagator: Any = None


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [part.strip().lower() for part in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if part.strip()]
    if exporters:
        return any(name != "none" for name in exporters)
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    names = [part.strip().lower() for part in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if part.strip()]
    found = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
            if protocol.startswith("http"):
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            found.append(OTLPSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console or none)")
    return found


def setup_from_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on when the environment asks for it; True when on. Never raises: a missing
    package or a bad setting is logged and the service runs untraced."""
    if _tracer is not None:  # already on (use_provider, or an earlier app in this process)
        return True
    if not requested(environ):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "monoserve"})
        provider = TracerProvider(resource=resource)
        for exporter in _exporters(environ):
            provider.add_span_processor(BatchSpanProcessor(exporter))
    except ImportError as exc:
        log.warning("tracing requested by OTEL_* settings but %s is not installed (pip install 'monoserve[otlp]'): "
                    "running untraced", exc.name)
        return False
    except Exception as exc:  # noqa: BLE001 - a bad OTEL_* value must not stop the service
        log.warning("tracing requested but not set up (%s): running untraced", exc)
        return False
    use_provider(provider, owned=True)
    log.info("tracing on: %s", environ.get("OTEL_TRACES_EXPORTER", "otlp"))
    return True


def use_provider(provider: Any, owned: bool = False) -> None:
    """Trace with this TracerProvider (tests: an in-memory exporter); None turns tracing off."""
    global _tracer, _provider, _propagator
    if provider is None:
        _tracer = _propagator = None
        _provider = None
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _tracer = provider.get_tracer("monoserve")
    _propagator = TraceContextTextMapPropagator()
    _provider = provider if owned else None


def shutdown() -> None:
    """Flush and stop the provider this module made (at the app's shutdown)."""
    global _provider
    if _provider is not None:
        try:
            _provider.force_flush()
        except Exception:  # noqa: BLE001
            log.warning("tracing: could not flush spans at shutdown", exc_info=True)


def active() -> bool:
    return _tracer is not None


def record(context: Any, method: str, route: str, headers: Mapping[str, str]) -> None:
    """Make the request's span and its stage spans from what the request noted (service.base.context)."""
    tracer = _tracer
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    offset = time.time_ns() - time.perf_counter_ns()  # perf_counter -> epoch nanoseconds
    start = int(context.start * 1e9) + offset
    parent = _propagator.extract(carrier=headers)
    attributes: dict[str, Any] = {"http.request.method": method, "http.route": route, "monoserve.request_id": context.id}
    if context.status is not None:
        attributes["http.response.status_code"] = context.status
    if context.model is not None:
        attributes["monoserve.model"] = context.model
    if context.version is not None:
        attributes["monoserve.version"] = context.version
    span = tracer.start_span(f"{method} {route}", context=parent, kind=SpanKind.SERVER, start_time=start,
                             attributes=attributes)
    end = time.time_ns()
    if not span.is_recording():  # not sampled (OTEL_TRACES_SAMPLER): no stage spans either
        span.end(end_time=end)
        return
    if context.status is not None and context.status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    child_context = set_span_in_context(span)
    for name, stage_start, stage_end in context.marks or ():
        stage = tracer.start_span(name, context=child_context, start_time=stage_start + offset)
        stage.end(end_time=stage_end + offset)
    span.end(end_time=end)


def headers_of_scope(scope: Mapping[str, Any]) -> dict[str, str]:
    """traceparent / tracestate from an ASGI scope's raw headers."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")}
