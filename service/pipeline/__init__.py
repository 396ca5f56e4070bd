"""The endpoint pipeline: what every inference request goes through whatever its protocol. The token
and control-API rules (control), body reading under the in-flight budget and deadlines, version
resolution, inline/thread/batched inference (endpoint, batching), the one error mapping, and the
transport-free stream sessions (streaming).

May import: service.repository, service.compute, service.base, service.settings.
"""
