"""GET /ui: a read-only console, plain server-rendered HTML with inline SVG (no scripts, no external
fetches): models, versions, proofs, signatures, kernels, response curves, the last minute's traffic."""
