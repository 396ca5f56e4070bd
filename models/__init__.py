"""Constrained models. Import submodules directly: `contract.checks` and `contract.modes` need no torch."""
