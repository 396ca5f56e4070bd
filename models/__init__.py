"""Constrained models. Import submodules directly: `models.checks` and `models.modes` need no torch."""
