"""The edge: where HTTP bytes become calls. uvicorn's protocols with the header deadline (http),
the ASGI hot path ahead of FastAPI (fastpath), and the FastAPI routes (routes/: OpenAPI docs,
health, metrics, model listings, OIP REST, the control API).

May import: service.protocols, service.pipeline, service.repository, service.compute,
service.base, service.settings. Imported only by the entry points (service.app, service.server).
"""
