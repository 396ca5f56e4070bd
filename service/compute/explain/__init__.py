"""POST /explain: explanations that are exact because every served score is proven monotone.

- view: what a model kind shows the explainer (features, proven directions, ranges, decision
  thresholds, a scorer that counts its model calls), given by the kind adapter (service.kinds);
- search: recourse (batched grid bisection), bounds (two corners), curves;
- additive: exact per-feature contributions when the graph is one affine map before its link;
- protocol: the request/answer of /explain and of the OIP extension, as pipeline adapters.
docs/explain.md states the guarantees and their cost in model calls.
"""
