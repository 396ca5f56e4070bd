"""Issue 21's measurements: the softmax smoother's fit at the defaults, and per-label thresholds.

    python bench/softmax_and_thresholds.py                    # this checkout -> bench/results/softmax_and_thresholds.{json,md}
    git archive 4a6e44d contract models | tar -x -C /tmp/before
    python bench/softmax_and_thresholds.py --code /tmp/before --smoother-only --out /tmp/before.json   # the code before

Smoother: `train_forecast` at the default options (--param softmax, --objective forecast) on the
synthetic seasonal monthly series of tests/test_alpha_search.py, a random walk, Nile and sunspots:
steps (Adam steps, or loss evaluations of the bounded search), converged, held-out MSE against the
naive forecast, the newest tap, CPU seconds of the fit. Classifier: the synthetic two-label set of
tests/test_per_label_thresholds.py (prevalences 50% and 10%), held-out confusion per label at the
pooled threshold (the old behaviour) and at the label's own, for each criterion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def seasonal_monthly(seed: int = 0, amplitude: float = 8.0, months: int = 240) -> np.ndarray:
    """tests/test_alpha_search.py's series (repeated here: that module needs the new code)."""
    rng = np.random.default_rng(seed)
    t = np.arange(months)
    level = 100.0 + np.cumsum(rng.normal(0.0, 1.0, months))
    return level + amplitude * np.sin(2 * np.pi * t / 12) + rng.normal(0.0, 1.0, months)


def smoother_rows() -> list[dict]:
    import torch

    import models.train_smoother as ts
    from models.data import read_table
    from models.smoother import MonotoneSmoother, SmootherConfig

    cases = [(f"seasonal monthly (seed {seed}, amplitude {amp:g})", seasonal_monthly(seed, amp), 31)
             for seed, amp in ((0, 8.0), (1, 5.0), (2, 6.0), (3, 7.0))]
    cases.append(("random walk (tests/test_baselines.py)", np.cumsum(np.random.default_rng(3).normal(size=300)), 31))
    for name in ("nile", "sunspot_year"):
        series = read_table(ROOT / "data" / f"{name}.csv").matrix(["value"]).T[0]
        cases += [(name, series, 9), (name, series, 31)]
    rows = []
    warm = MonotoneSmoother(SmootherConfig(kernel_size=31, param="softmax", mode="causal"))  # first-call costs, untimed
    ts.train_forecast(warm, cases[0][1][None], ts.SmootherTrainOptions(objective="forecast", epochs=5))
    for label, series, kernel_size in cases:
        torch.manual_seed(0)
        model = MonotoneSmoother(SmootherConfig(kernel_size=kernel_size, param="softmax", mode="causal"))
        start = time.process_time()
        result = ts.train_forecast(model, series[None], ts.SmootherTrainOptions(objective="forecast"))
        cpu = time.process_time() - start
        metrics = result.metrics
        fit = metrics.get("optimizer") or {  # the code before issue 21 had no fit summary
            "steps": len(result.losses), "converged": not any("has not converged" in w for w in metrics["warnings"])}
        rows.append({"case": label, "kernel_size": kernel_size, "steps": fit["steps"], "converged": fit["converged"],
                     "naive_limit": fit.get("naive_limit"), "heldout_mse": metrics["heldout_mse"],
                     "naive_mse": metrics["naive_mse"], "vs_naive": metrics["heldout_mse"] / metrics["naive_mse"] - 1,
                     "train_mse": metrics["train_mse"], "newest_tap": float(model.kernel.detach()[-1]), "cpu_s": cpu})
    return rows


def threshold_rows() -> list[dict]:
    import torch

    from models.classifier import ClassifierConfig, MonotoneClassifier
    from models.data import split_indices
    from models.metrics import confusion
    from models.train_classifier import ClassifierTrainOptions, predict_logits, train_classifier
    from test_per_label_thresholds import FEATURES, LABELS, two_label_set

    rows = []
    x, y = two_label_set()
    for criterion in ("f1", "youden", "fpr:0.05"):
        torch.manual_seed(0)
        model = MonotoneClassifier(ClassifierConfig(feature_names=FEATURES, labels=LABELS, hidden=[8], activation="tanh"))
        options = ClassifierTrainOptions(epochs=40, seed=0, threshold_criterion=criterion)
        train_classifier(model, x, y, options)
        test = split_indices(x.shape[0], options.val_fraction, options.test_fraction, options.seed)["test"]
        probabilities = torch.sigmoid(predict_logits(model, x[test])).double().numpy()
        for index, label in enumerate(LABELS):
            for which, threshold in (("pooled", model.config.threshold), ("per label", model.config.thresholds[index])):
                c = confusion(y[test, index], probabilities[:, index], threshold)
                tpr = c["tp"] / max(c["tp"] + c["fn"], 1)
                fpr = c["fp"] / max(c["fp"] + c["tn"], 1)
                rows.append({"criterion": criterion, "label": label, "prevalence": float(y[:, index].mean()),
                             "threshold_kind": which, "threshold": threshold, **c, "tpr": tpr, "fpr": fpr,
                             "f1": 2 * c["tp"] / max(2 * c["tp"] + c["fp"] + c["fn"], 1), "youden": tpr - fpr})
    return rows


def markdown(smoother: list[dict], thresholds: list[dict]) -> str:
    lines = ["| series | taps | steps | converged | held-out MSE | naive | vs naive | newest tap | fit CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in smoother:
        lines.append(f"| {r['case']} | {r['kernel_size']} | {r['steps']} | {'yes' if r['converged'] else 'no'} | "
                     f"{r['heldout_mse']:.6g} | {r['naive_mse']:.6g} | {r['vs_naive']:+.1%} | {r['newest_tap']:.4f} | "
                     f"{r['cpu_s']:.3f} |")
    if thresholds:
        lines += ["", "| criterion | label (prevalence) | threshold | value | TP / FP / TN / FN | F1 | TPR | FPR |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in thresholds:
            lines.append(f"| {r['criterion']} | {r['label']} ({r['prevalence']:.0%}) | {r['threshold_kind']} | "
                         f"{r['threshold']:.3f} | {r['tp']} / {r['fp']} / {r['tn']} / {r['fn']} | {r['f1']:.3f} | "
                         f"{r['tpr']:.3f} | {r['fpr']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose contract/ and models/ to measure")
    parser.add_argument("--smoother-only", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "softmax_and_thresholds.json")
    args = parser.parse_args()
    sys.path[:0] = [str(args.code), str(ROOT / "tests")]
    import torch

    torch.set_num_threads(1)
    smoother = smoother_rows()
    thresholds = [] if args.smoother_only else threshold_rows()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"code": str(args.code), "smoother": smoother, "thresholds": thresholds}, indent=1))
    table = markdown(smoother, thresholds)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
