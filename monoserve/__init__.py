"""monoserve: train, export and serve constrained neural networks."""

__version__ = "0.1.0"
