"""HTTP routes, one small module per concern; shared dependencies live in deps."""
