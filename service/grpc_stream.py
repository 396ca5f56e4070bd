"""ModelStreamInfer (Triton's bidirectional stream of service.grpc_oip): one answer per request, in order.

Each request of a stream is a ModelInferRequest answered through the one pipeline, like ModelInfer:
plain infers for any model. A failed request answers `error_message` (Triton's convention) and
the stream goes on; the stream itself ends only when the client closes it or the server drains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from service.grpc_oip import GrpcInferAdapter, method_route, reply_message, run_pipeline
from service.grpc_proto import messages

if TYPE_CHECKING:
    from service.routes.deps import Service

ROUTE = method_route("ModelStreamInfer")
SEQUENCE_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end"})


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def stream_response(infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse whose infer_response (field 2) is these serialized bytes: framed
    here rather than parsed and serialized again (a large answer would be copied twice more)."""
    return b"\x12" + _varint(len(infer_response)) + infer_response


def stream_error(message: str) -> bytes:
    return messages().ModelStreamInferResponse(error_message=message).SerializeToString()


class StreamSession:
    """The state of one ModelStreamInfer call."""

    def __init__(self, service: Service, metadata: Mapping[str, str]):
        self.service, self.metadata = service, metadata
        self.adapter = GrpcInferAdapter(service, ROUTE)

    async def answer(self, body: bytes) -> bytes:
        reply = await run_pipeline(self.service, self.adapter, body, self.metadata)
        if reply.status != 200:
            return stream_error(reply_message(reply))
        return stream_response(reply.body)

    def close(self) -> None:
        pass
