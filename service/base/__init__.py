"""What every room shares, importing no other room: the domain errors (errors), the body codecs
(codec: JSON/.npy to numpy and back), the request context and log formats (context), tracing,
Prometheus metrics and the coarse deadlines.

May import: service.settings and third-party libraries only.
"""
