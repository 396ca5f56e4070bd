"""A user's Lipschitz-monotone network (g(x) + lambda * sum_i s_i x_i, e.g. `monotonicnetworks`),
recognised in its graph and proven per feature before it is published (contract.lipschitz).

The export takes this road when the classifier graph has no output layer (its output adds two
computed branches) and its output has a part exactly linear in the features (the residual term).
The service proves it again at load time with the same code (service.kinds.ClassifierKind.certify).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from contract.certificate import GraphInfo
from contract.lipschitz import FeatureRate, certify_lipschitz, has_linear_residual

FORM = "g(x) + lambda * sum_i s_i x_i"


class NotProvenError(ValueError):
    """The network is outside the form, or its rate bound exceeds lambda; `problems`, plain sentence first
    (export.kinds turns it into export.byom.ModelRefusedError)."""

    def __init__(self, problems: list[str]):
        super().__init__(problems[0])
        self.problems = problems


@dataclass
class LipschitzProof:
    rates: list[FeatureRate]
    found: str
    draw_card: Callable[[Any], None]


def lipschitz_proof(info: GraphInfo, spec: Any, input_name: str, output_name: str,
                    no_layer: Exception) -> LipschitzProof:
    """The proof of a Lipschitz-monotone network, or NotProvenError whose first sentence says
    plainly what is out of scope (a graph that is not of the form, an op without a bound, a scope
    other than per-feature directions, a rate above lambda with both numbers)."""
    if not has_linear_residual(info, input_name, output_name):
        raise NotProvenError([f"networks without an output layer are proven only in the Lipschitz-monotone form {FORM}, "
                                 f"and this graph's output adds no term linear in the features (no output layer found: "
                                 f"{no_layer})"])
    if spec.scope != "all":
        raise NotProvenError([f"a Lipschitz-monotone network ({FORM}) has no output layer to constrain, so scope "
                                 "'final' does not apply: declare each feature's direction (monotone = \"all\" or a table "
                                 "{feature = 1 | -1 | 0}) to have it proven by its Lipschitz bound"])
    features = [(index, name, direction) for index, (name, direction) in enumerate(zip(spec.features, spec.directions()))
                if direction != "free"]
    if not features:
        raise NotProvenError([f"a Lipschitz-monotone network ({FORM}) with every feature free promises nothing: "
                                 "declare at least one feature's direction"])
    certificate, rates = certify_lipschitz(info, input_name, features, [output_name])
    failures = certificate.failures
    if failures:
        lost = [f for f in failures if f.found == "unknown"]
        if lost:
            first = ("Lipschitz-monotone networks are proven only when g is built from linear layers and 1-Lipschitz "
                     "activations (GroupSort/MaxMin as TopK, Max/Min, the ReLU family, Tanh, Sigmoid) with data movement "
                     "between them; this one is outside that form")
            raise NotProvenError([f"{first}: {lost[0].message}"] + [f.message for f in failures[1:]])
        raise NotProvenError([f"the network is not proven monotone, because a bound on g's rate exceeds lambda: "
                                 f"{failures[0].message}"] + [f.message for f in failures[1:]])
    words = ", ".join(f"{r.feature!r} lambda {r.coefficient:.4g} >= bound {r.bound:.4g}" for r in rates)
    return LipschitzProof(rates, f"Lipschitz-monotone form {FORM}: {words}",
                          lambda figure: _draw(figure, rates))


def _draw(figure: Any, rates: list[FeatureRate]) -> None:
    """The card plot: per monotone feature, lambda (the linear coefficient) beside the bound on g's rate."""
    figure.set_size_inches(max(4.0, 0.9 * len(rates) + 2.0), 3.0)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(rates))
    axes.bar(positions - 0.2, [r.coefficient for r in rates], 0.4, label="lambda (linear coefficient)", color="tab:green")
    axes.bar(positions + 0.2, [r.bound for r in rates], 0.4, label="bound on g's rate", color="tab:gray")
    axes.set_xticks(positions, [r.feature for r in rates], fontsize=8)
    axes.legend(fontsize=8)
    axes.set_title("Lipschitz-monotone: lambda >= bound per feature", fontsize=9)
