"""monoserve's serving side: prove every model version from its artifact, then serve it over HTTP."""

from monoserve import __version__

__all__ = ["__version__"]
