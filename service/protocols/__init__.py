"""The protocols: one adapter per wire format, turning bytes into an InferRequest and an InferResult
into bytes. monoserve's own JSON/.npy (native), the Open Inference Protocol over REST (oip) and gRPC
(grpc_*, with oip_v2.proto), and the three stream transports (stream_http, stream_ws, grpc_stream).
Limits, resolution, inference and errors are the pipeline's, never a protocol's.

May import: service.pipeline, service.repository, service.compute, service.base, service.settings.
"""
