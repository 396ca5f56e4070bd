"""Domain exceptions of the service; each carries its HTTP status and answers {"error": message, ...}."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


class BadRequestError(ServiceError):
    """Malformed JSON, wrong rank/shape/feature count, unknown feature names, NaN/Inf, empty input."""

    status = 400


class UnauthorizedError(ServiceError):
    status = 401


class ForbiddenError(ServiceError):
    """The model control API is off (or open to loopback callers only, and this one is not)."""

    status = 403


class NotFoundError(ServiceError):
    """Unknown model or version."""

    status = 404


class RequestTimeoutError(ServiceError):
    """The body did not arrive within the body read timeout."""

    status = 408


class PayloadTooLargeError(ServiceError):
    """Body, element count, rows or signal length over a per-request limit (or over the whole in-flight budget)."""

    status = 413


class UnsupportedMediaTypeError(ServiceError):
    status = 415


class ModelUnavailableError(ServiceError):
    """The model exists but has no version that passed its proof (or the one asked for was refused)."""

    status = 503


class OverloadedError(ServiceError):
    """The dynamic batching queue or the in-flight memory budget is full: retry after Retry-After seconds."""

    status = 503


class VersionGoneError(ServiceError):
    """A stream's pinned model version no longer serves (removed, unloaded or replaced): start a new stream."""

    status = 409
