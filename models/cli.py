"""`monoserve train smoother|classifier`: train a constrained model on a CSV file, write a checkpoint.

Only argparse and the stdlib at import time: torch is imported inside the handlers, so the other
subcommands (`monoserve serve`) never pay for it. Every input problem is found before training
starts and reported on stderr with exit code 2; no checkpoint is written then.

Over 500 lines on purpose: the two training commands and `attack` share their argument groups and
input checks here (the training itself is in models.train_smoother / train_classifier); split,
each part would import the other's parsers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXIT_USAGE = 2

SMOOTHER_DEFAULTS = {"kernel_size": 9, "epochs": 400, "lr": 0.05}
CLASSIFIER_DEFAULTS = {"epochs": 150, "lr": 0.01, "hidden": "32,32"}
MIN_CLASSIFIER_ROWS = 10  # 60/15/25 split: every part needs rows


class UsageError(ValueError):
    """Arguments that contradict each other or the data (reported like a DataError)."""


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 32,32, got {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"expected one or more positive layer sizes like 32,32, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _pos_weight(text: str) -> str | float:
    if text in ("auto", "none"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected auto, none or a positive finite number, got {text!r}")
    return value


def _threshold_criterion(text: str) -> str:
    from models.metrics import parse_threshold_criterion  # numpy only

    try:
        parse_threshold_criterion(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def write_report(path: Path, report: dict) -> None:
    """The training report as JSON (the same numbers the checkpoint's metrics hold), written atomically."""
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a constrained model on a CSV file", description=__doc__)
    kinds = train.add_subparsers(dest="model_kind", metavar="MODEL", required=True)

    smoother = kinds.add_parser(
        "smoother",
        help="a positive monotone smoothing kernel (forecast or denoise objective)",
    )
    smoother.add_argument("--data", required=True, type=Path, help="CSV file with a header row")
    smoother.add_argument(
        "--column", action="extend", nargs="+", default=None, metavar="NAME",
        help="series column(s); several series share the kernel; "
        "default: every column but time/date/year/index and the target",
    )
    smoother.add_argument("--kernel-size", type=_positive_int, default=SMOOTHER_DEFAULTS["kernel_size"],
                          help="odd number of taps (default: %(default)s)")
    smoother.add_argument("--param", choices=("exp-cumsum", "softmax"), default="exp-cumsum",
                          help="kernel parametrization: exp(p).cumsum() or softmax(lin * alpha) (default: %(default)s)")
    smoother.add_argument("--objective", choices=("forecast", "denoise"), default="forecast",
                          help="forecast: the causal filter predicts x[t+h]; denoise: map --column to --target-column "
                          "(default: %(default)s)")
    smoother.add_argument("--horizon", type=_positive_int, default=1, help="forecast steps ahead (default: %(default)s)")
    smoother.add_argument("--target-column", default=None, metavar="NAME", help="clean column (denoise)")
    smoother.add_argument(
        "--mode", choices=("same", "causal", "valid"), default=None,
        help="default edge mode stored in the checkpoint (denoise also trains in it); "
        "default: causal for forecast, same for denoise",
    )
    smoother.add_argument("--epochs", type=_positive_int, default=SMOOTHER_DEFAULTS["epochs"],
                          help="full-batch Adam steps (exp-cumsum), or the budget of loss evaluations of the "
                          "search over alpha (softmax) (default: %(default)s)")
    smoother.add_argument("--lr", type=_positive_float, default=SMOOTHER_DEFAULTS["lr"], help="Adam learning rate (exp-cumsum; softmax is fitted by a search without one) (default: %(default)s)")
    smoother.add_argument("--season", type=_positive_int, default=None, metavar="PERIOD",
                          help="season length for the seasonal-naive baseline (default: detected from the "
                          "training part's autocorrelation)")
    smoother.add_argument("--ar-order", type=_positive_int, default=None, metavar="P",
                          help="order of the AR(p) least-squares baseline (default: chosen by AIC up to 12)")
    smoother.add_argument("--fill", choices=("interpolate", "drop"), default=None,
                          help="gaps (empty, NA or NaN cells): interpolate linearly, or drop those rows "
                          "(default: refuse, naming the rows)")
    smoother.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    smoother.add_argument("--out", required=True, type=Path, help="checkpoint path to write")
    smoother.add_argument("--report", type=Path, default=None, metavar="PATH",
                          help="also write the report (held-out MSE, baselines, warnings) as JSON")
    smoother.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                          help="progress bar (default: only on a terminal)")
    smoother.add_argument("--threads", type=_positive_int, default=1, help="torch intra-op threads (default: %(default)s)")
    smoother.set_defaults(func=run_train_smoother)

    classifier = kinds.add_parser(
        "classifier",
        help="an MLP whose scores are monotone in its features (nonnegative weights)",
    )
    classifier.add_argument("--data", required=True, type=Path, help="CSV file with a header row")
    classifier.add_argument("--label", action="extend", nargs="+", required=True, metavar="NAME",
                            help="0/1 label column(s); several make a multi-label model")
    classifier.add_argument("--features", action="extend", nargs="+", default=None, metavar="NAME",
                            help="feature columns (default: every column but the labels)")
    classifier.add_argument("--scope", choices=("all", "final", "none"), default="all",
                            help="all: every score is monotone in each feature; final: only the output layer is nonnegative; "
                            "none: unconstrained baseline (export needs --allow-unconstrained) (default: %(default)s)")
    classifier.add_argument("--activation", choices=("relu", "leaky_relu", "tanh", "sigmoid", "softplus", "elu"),
                            default="relu", help="hidden activation, non-decreasing (default: %(default)s)")
    classifier.add_argument("--transform", choices=("none", "log1p"), default="none",
                            help="monotone feature transform inside the model: log1p(max(x, 0)) (default: %(default)s)")
    classifier.add_argument("--calibrate", nargs="?", choices=("none", "platt", "temperature"), const="platt",
                            default="none", help="fit a positive scale (and a bias: platt) on the logits on the "
                            "validation split, folded into the model (--calibrate alone: platt; default: %(default)s)")
    classifier.add_argument("--threshold-criterion", type=_threshold_criterion, default=None, metavar="CRITERION",
                            help="choose the threshold on the validation split: f1, youden or fpr:RATE "
                            "(default: f1 unless --threshold is given)")
    classifier.add_argument("--method", choices=("reparam", "project"), default="reparam",
                            help="reparam: weights = nonneg(raw); project: clamp to >= 0 after every step (default: %(default)s)")
    classifier.add_argument("--nonneg", choices=("softplus", "exp", "square"), default="softplus",
                            help="the reparam map (default: %(default)s)")
    classifier.add_argument("--decreasing", action="extend", nargs="+", default=[], metavar="NAME",
                            help="features whose rise may only lower the scores (scope all)")
    classifier.add_argument("--free", action="extend", nargs="+", default=[], metavar="NAME",
                            help="features with unconstrained effect (scope all)")
    classifier.add_argument("--hidden", type=_hidden_sizes, default=CLASSIFIER_DEFAULTS["hidden"],
                            help="hidden layer sizes, comma-separated (default: %(default)s)")
    classifier.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                            help="adam, or sgd with momentum 0.9 (default: %(default)s)")
    classifier.add_argument("--weight-decay", type=_nonnegative_float, default=0.0,
                            help="L2 penalty on the (raw) parameters (default: %(default)s)")
    classifier.add_argument("--pos-weight", type=_pos_weight, default="auto", metavar="auto|none|FLOAT",
                            help="BCE positive weight: auto = negatives/positives per label, none, or a number "
                            "(default: %(default)s)")
    classifier.add_argument("--epochs", type=_positive_int, default=CLASSIFIER_DEFAULTS["epochs"],
                            help="maximum epochs; early stopping on validation loss (default: %(default)s)")
    classifier.add_argument("--patience", type=_positive_int, default=15,
                            help="epochs without a better validation loss before stopping (default: %(default)s)")
    classifier.add_argument("--batch-size", type=_positive_int, default=128, help="(default: %(default)s)")
    classifier.add_argument("--lr", type=_positive_float, default=CLASSIFIER_DEFAULTS["lr"],
                            help="learning rate (default: %(default)s)")
    classifier.add_argument("--threshold", type=float, nargs="+", default=None, metavar="T",
                            help="fixed decision threshold(s) on probabilities instead of --threshold-criterion: "
                            "one for every label, or one per --label in its order")
    classifier.add_argument("--seed", type=int, default=0,
                            help="seeds the split, the initial weights and the batch order (default: %(default)s)")
    classifier.add_argument("--out", required=True, type=Path, help="checkpoint path to write")
    classifier.add_argument("--report", type=Path, default=None, metavar="PATH",
                            help="also write the report (held-out ROC AUC, PR AUC, Brier, ECE, confusion, threshold) as JSON")
    classifier.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                            help="progress bar (default: only on a terminal)")
    classifier.add_argument("--threads", type=_positive_int, default=1, help="torch intra-op threads (default: %(default)s)")
    classifier.set_defaults(func=run_train_classifier)

    attack = subparsers.add_parser(
        "attack", help="increase-only evasion attack on a published classifier version (ONNX Runtime)",
        description="Raise feature values of the flagged held-out positives, each by at most B standard "
        "deviations, searching for a score below the threshold; reports the evasion rate per budget.",
    )
    attack.add_argument("version_dir", type=Path, metavar="DIR/NAME/VERSION", help="a published classifier version")
    attack.add_argument("--data", required=True, type=Path, help="CSV file with the features and the label")
    attack.add_argument("--label", required=True, metavar="COL", help="0/1 label column: the positives are attacked")
    attack.add_argument("--budgets", default="0.5,1,2,5", help="budgets in std devs, comma-separated (default: %(default)s)")
    attack.add_argument("--restarts", type=_positive_int, default=32, help="random starting points per row (default: %(default)s)")
    attack.add_argument("--pairs", type=_positive_int, default=10000,
                        help="random pairs x <= x' for the monotonicity check (default: %(default)s)")
    attack.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    attack.add_argument("--report", type=Path, default=None, metavar="PATH", help="write the report as JSON")
    attack.add_argument("--card", action=argparse.BooleanOptionalAction, default=True,
                        help="write attack.json and the card with the table next to the version, into "
                             "DIR/NAME/VERSION.attack/ (the published version is never written; default: on)")
    attack.set_defaults(func=_run_attack)


def _run_attack(args: argparse.Namespace) -> int:
    from models.attack import run_cli

    return run_cli(args)


def _fail(message: str) -> int:
    print(f"monoserve train: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _seed_everything(seed: int, threads: int) -> None:
    import torch

    # These models are tiny: intra-op threads only add synchronization (10x slower on a busy machine).
    torch.set_num_threads(threads)
    # CPU kernels are deterministic for a fixed seed; torch.use_deterministic_algorithms is not
    # needed and would import torch._inductor (seconds).
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------- smoother


def _load_smoother_data(args: argparse.Namespace) -> tuple[Any, list[str], Any, Any]:
    """-> (table, columns, series [C, L], target [C, L] | None); raises DataError/UsageError."""
    import numpy as np

    from models.data import DataError, default_series_columns, fill_gaps, read_table

    if args.kernel_size % 2 == 0:
        raise UsageError(f"--kernel-size must be odd (the kernel has a centre tap), got {args.kernel_size}")
    if args.objective == "denoise" and not args.target_column:
        raise UsageError("--objective denoise needs --target-column NAME (the clean series)")
    if args.objective == "forecast" and args.target_column:
        raise UsageError("--target-column is for --objective denoise (forecast predicts the series itself)")
    table = read_table(args.data)
    if args.target_column:
        table.require_columns([args.target_column], "target column")
    columns = args.column or default_series_columns(table, exclude=[args.target_column] if args.target_column else [])
    table.require_columns(columns)
    if args.target_column in columns:
        raise UsageError(f"{args.data}: column {args.target_column!r} is both an input --column and the --target-column")
    if args.objective == "denoise" and len(columns) != 1:
        raise UsageError(f"--objective denoise maps one --column to the target, got {len(columns)}: {', '.join(columns)}")
    if args.fill is None:
        try:
            values = table.matrix(columns)
        except DataError as exc:
            raise DataError(f"{exc} (to train on a series with gaps, pass --fill interpolate or --fill drop)") from None
        args.fill_info = None
    else:
        values, args.fill_info = fill_gaps(table.matrix(columns, gaps=True), args.fill, args.data, columns)
    series = values.T  # [C, L]
    length = series.shape[1]
    if length < args.kernel_size:
        raise UsageError(
            f"{args.data}: the series {', '.join(repr(c) for c in columns)} have {length} rows, "
            f"shorter than the kernel ({args.kernel_size} taps); use a smaller --kernel-size"
        )
    n_train = int(np.floor(length * 0.8))
    if args.objective == "forecast" and not args.horizon < n_train < length:
        raise UsageError(
            f"{args.data}: {length} rows leave no forecast to train or evaluate at horizon {args.horizon} "
            f"(training part {n_train} rows); use a longer series or a smaller --horizon"
        )
    if args.objective == "forecast" and args.season is not None and args.season >= n_train - args.horizon:
        raise UsageError(
            f"--season {args.season} is too long for a training part of {n_train} rows at horizon {args.horizon}"
        )
    usable = n_train - args.horizon - (args.ar_order or 1) + 1  # training targets an AR(p) can be fitted on
    if args.objective == "forecast" and args.ar_order is not None and usable < args.ar_order + 2:
        raise UsageError(
            f"--ar-order {args.ar_order} needs more than the {max(usable, 0)} training targets that "
            f"{n_train} training rows leave at horizon {args.horizon}; use a smaller order"
        )
    if args.objective == "denoise" and not args.kernel_size <= n_train < length:
        raise UsageError(
            f"{args.data}: {length} rows leave a training part of {n_train} rows, shorter than the kernel "
            f"({args.kernel_size} taps), or no held-out rows"
        )
    if args.target_column and args.fill is not None:
        raise UsageError("--fill is for forecasting series; denoise needs a complete --target-column and input")
    target = table.matrix([args.target_column]).T if args.target_column else None
    return table, columns, series, target


def run_train_smoother(args: argparse.Namespace) -> int:
    from models.data import DataError

    try:
        table, columns, series, target = _load_smoother_data(args)
    except (DataError, UsageError) as exc:
        return _fail(str(exc))

    from models.checkpoint import save_checkpoint
    from models.smoother import MonotoneSmoother, SmootherConfig
    from models.train_smoother import SmootherTrainOptions, train_denoise, train_forecast

    mode = args.mode or ("causal" if args.objective == "forecast" else "same")
    _seed_everything(args.seed, args.threads)
    model = MonotoneSmoother(SmootherConfig(kernel_size=args.kernel_size, param=args.param, mode=mode))
    options = SmootherTrainOptions(
        objective=args.objective, horizon=args.horizon, mode=mode, epochs=args.epochs, lr=args.lr,
        seed=args.seed, progress=args.progress, season=args.season, ar_order=args.ar_order, names=columns,
    )
    if args.objective == "forecast":
        result = train_forecast(model, series, options)
    else:
        result = train_denoise(model, series, target, options)
    kernel = model.kernel.detach().double().numpy()
    provenance = {
        **table.provenance(),
        "columns": columns,
        "target_column": args.target_column,
        "objective": args.objective,
        "scaling": result.scaling,
        "split": result.split,
        "training": {"epochs": args.epochs, "lr": args.lr, "seed": args.seed,
                     "optimizer": "adam" if args.param == "exp-cumsum" else "bounded-search"},
        "gaps": args.fill_info,
    }
    path = save_checkpoint(args.out, model, metrics=result.metrics, provenance=provenance,
                           history={"loss": result.losses})
    _print_smoother_summary(args, columns, result.metrics, kernel, path)
    if args.report is not None:
        write_report(args.report, {"kind": "smoother", "checkpoint": str(path), "kernel": kernel.tolist(),
                                   "config": {"kernel_size": args.kernel_size, "param": args.param,
                                              "objective": args.objective, "columns": columns},
                                   **result.metrics})
    return 0


def _fit_summary(fit: dict) -> str:
    """One line on how training went: steps taken and whether it converged."""
    state = "converged" if fit.get("converged") else "NOT converged"
    if fit.get("method") == "adam":
        return f"fit: Adam, {fit['steps']} steps at lr {fit['lr']:g}, {state}"
    if "alpha" in fit:
        chosen = "the naive limit (alpha -> inf)" if fit["naive_limit"] else f"alpha {fit['alpha']:.4g}"
        return (f"fit: bounded search over alpha, {fit['steps']} loss evaluations, {state}: {chosen}; training "
                f"loss {fit['train_loss']:.6g} (naive limit {fit['naive_train_loss']:.6g})")
    return "fit: -"


def _print_smoother_summary(args, columns, metrics: dict, kernel, path: Path) -> None:
    print(f"smoother ({args.param}, {args.kernel_size} taps, objective {args.objective}) on "
          f"{args.data} [{', '.join(columns)}]")
    if args.objective == "forecast":
        heldout = metrics["heldout"]
        settings = heldout["baseline_settings"]
        print(f"  held-out MSE      {metrics['heldout_mse']:.6g}  (horizon {args.horizon}, last 20% of each series; "
              f"units: {heldout['units']})")
        labels = {
            "naive": "naive last value",
            "seasonal_naive": f"seasonal naive (m={settings['season'] or 1}{', detected' if settings['season_detected'] and settings['season'] else ''})",
            "ar": f"AR({settings['ar_order']}) least squares",
            "ses": f"best SES (a={settings['ses_alpha']:.2f})",
        }
        for key, label in labels.items():
            skill = heldout["skill"][key]
            print(f"  {label:<32} {heldout['baselines'][key]:.6g}  skill {'n/a' if skill is None else f'{skill:+.1%}'}")
        if len(columns) > 1:
            for name, detail in heldout["per_series"].items():
                print(f"    {name}: MSE {detail['mse']:.6g} (naive {detail['naive']:.6g}, seasonal naive "
                      f"{detail['seasonal_naive']:.6g}, AR {detail['ar']:.6g}, SES {detail['ses']:.6g})")
    else:
        print(f"  held-out MSE      {metrics['heldout_mse']:.6g}  vs the noisy input {metrics['identity_mse']:.6g}"
              f"  skill {metrics['skill_vs_identity']:+.1%}")
    taps = " ".join(f"{value:.4f}" for value in kernel)
    print(f"  kernel (oldest -> newest tap): {taps}")
    print(f"  {_fit_summary(metrics.get('optimizer', {}))}")
    for message in metrics.get("warnings", []):
        print(f"  warning: {message}")
    print(f"  checkpoint: {path}")


# --------------------------------------------------------------------------------- classifier


def _load_classifier_data(args: argparse.Namespace) -> tuple[Any, list[str], list[str], Any, Any]:
    """-> (table, features, directions, X [N, F], Y [N, n_labels]); raises DataError/UsageError."""
    from models.data import binary_labels, read_table

    if args.scope != "all" and (args.decreasing or args.free):
        flags = " and ".join(flag for flag, given in (("--decreasing", args.decreasing), ("--free", args.free)) if given)
        what = "constrains only the output layer" if args.scope == "final" else "constrains nothing"
        raise UsageError(
            f"{flags} need --scope all: scope {args.scope!r} {what} and promises no monotonicity in any feature"
        )
    if args.threshold is not None and args.threshold_criterion is not None:
        raise UsageError("give either --threshold (fixed) or --threshold-criterion (chosen on validation), not both")
    labels = list(dict.fromkeys(args.label))
    if args.threshold is not None:
        if len(args.threshold) not in (1, len(labels)):
            raise UsageError(f"--threshold takes one value for every label or one per label ({len(labels)}: "
                             f"{', '.join(labels)}), got {len(args.threshold)}")
        outside = [t for t in args.threshold if not 0.0 < t < 1.0]
        if outside:
            raise UsageError(f"--threshold must be in (0, 1), got {', '.join(f'{t:g}' for t in outside)}")
    table = read_table(args.data)
    table.require_columns(labels, "label column")
    features = list(dict.fromkeys(args.features)) if args.features else [c for c in table.columns if c not in labels]
    if not features:
        raise UsageError(f"{args.data}: no feature columns left besides the labels {', '.join(labels)}")
    table.require_columns(features, "feature")
    both = [name for name in features if name in labels]
    if both:
        raise UsageError(f"{', '.join(repr(n) for n in both)} cannot be both a feature and a --label")
    for flag, names in (("--decreasing", args.decreasing), ("--free", args.free)):
        unknown = [name for name in names if name not in features]
        if unknown:
            raise UsageError(
                f"{flag}: unknown feature name(s) {', '.join(repr(n) for n in unknown)}; "
                f"the features are {', '.join(features)}"
            )
    overlap = sorted(set(args.decreasing) & set(args.free))
    if overlap:
        raise UsageError(f"{', '.join(repr(n) for n in overlap)} cannot be both --decreasing and --free")
    directions = [
        "decreasing" if name in args.decreasing else "free" if name in args.free else "increasing" for name in features
    ]
    x = table.matrix(features)
    y = binary_labels(table, labels)
    if table.n_rows < MIN_CLASSIFIER_ROWS:
        raise UsageError(
            f"{args.data}: {table.n_rows} rows are too few to split into training, validation and held-out "
            f"rows (need at least {MIN_CLASSIFIER_ROWS})"
        )
    return table, features, directions, x, y


def run_train_classifier(args: argparse.Namespace) -> int:
    from models.data import DataError

    try:
        table, features, directions, x, y = _load_classifier_data(args)
    except (DataError, UsageError) as exc:
        return _fail(str(exc))

    from models.checkpoint import save_checkpoint
    from models.classifier import ClassifierConfig, MonotoneClassifier
    from models.train_classifier import ClassifierTrainOptions, train_classifier

    labels = list(dict.fromkeys(args.label))
    _seed_everything(args.seed, args.threads)
    config = ClassifierConfig(
        feature_names=features, labels=labels, hidden=args.hidden, scope=args.scope, method=args.method,
        nonneg=args.nonneg, directions=directions, threshold=0.5 if args.threshold is None or len(args.threshold) > 1 else args.threshold[0],
        thresholds=list(args.threshold) if args.threshold is not None and len(args.threshold) > 1 else None,
        activation=args.activation, transform=args.transform, calibrated=args.calibrate != "none",
    )
    model = MonotoneClassifier(config)
    options = ClassifierTrainOptions(
        epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        pos_weight=args.pos_weight, batch_size=args.batch_size, patience=args.patience, seed=args.seed,
        progress=args.progress, calibration=args.calibrate,
        threshold_criterion=None if args.threshold is not None else (args.threshold_criterion or "f1"),
    )
    result = train_classifier(model, x.astype("float32"), y, options)
    provenance = {
        **table.provenance(),
        "features": features,
        "directions": directions,
        "labels": labels,
        "scaling": {"mean": model.feature_mean.tolist(), "scale": model.feature_scale.tolist()},
        "feature_ranges": result.feature_ranges,  # the manifest's feature_ranges at export
        "split": result.split,
        "training": {
            "optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay, "epochs": args.epochs,
            "patience": args.patience, "batch_size": args.batch_size, "pos_weight": args.pos_weight, "seed": args.seed,
            "activation": args.activation, "transform": args.transform, "calibrate": args.calibrate,
            "threshold_criterion": result.metrics["threshold_criterion"],
        },
    }
    history = {key: [row[key] for row in result.history] for key in ("train_loss", "val_loss")}
    path = save_checkpoint(args.out, model, metrics=result.metrics, provenance=provenance, history=history)
    _print_classifier_summary(args, config, result.metrics, result.split, path)
    if args.report is not None:
        write_report(args.report, {"kind": "classifier", "checkpoint": str(path), "config": {
            "scope": config.scope, "activation": config.activation, "transform": config.transform,
            "calibrate": args.calibrate, "hidden": config.hidden, "seed": args.seed}, **result.metrics})
    return 0


def _print_classifier_summary(args, config, metrics: dict, split: dict, path: Path) -> None:
    print(f"classifier (scope {config.scope}, method {config.method}, hidden {config.hidden}) on {args.data}: "
          f"{len(config.feature_names)} features -> {', '.join(config.labels)}")
    print(f"  split: {split['n_train']} train / {split['n_val']} validation / {split['n_test']} held-out rows "
          f"(seed {split['seed']}); best epoch {metrics['best_epoch']} of {metrics['epochs_run']}")
    heldout = metrics["heldout"]
    print(f"  held-out loss {metrics['heldout_loss']:.4f}  accuracy {metrics['heldout_accuracy']:.4f}  "
          f"ROC AUC {_format_auc(metrics['heldout_roc_auc'])}  PR AUC {_format_auc(heldout['pr_auc'])}")
    print(f"  held-out Brier {heldout['brier']:.4f}  ECE {heldout['ece']:.4f}  mean probability "
          f"{heldout['mean_probability']:.3f} vs positive rate {heldout['positive_rate']:.3f}")
    counts = heldout["confusion"]
    if metrics["threshold"] is not None:
        chosen = f"threshold {metrics['threshold']:.4f} ({metrics['threshold_criterion']})"
    else:  # one per label, listed below with each label's counts
        pooled = metrics.get("threshold_pooled")
        chosen = (f"thresholds per label ({metrics['threshold_criterion']}"
                  + (f"; pooled would be {pooled:.4f}" if pooled is not None else "") + "), all labels")
    print(f"  {chosen}: TP {counts['tp']}  FP {counts['fp']}  TN {counts['tn']}  FN {counts['fn']}")
    if metrics.get("calibration"):
        cal = metrics["calibration"]
        print(f"  calibration ({cal['method']}): scale {', '.join(f'{v:.3f}' for v in cal['scale'])}  bias "
              f"{', '.join(f'{v:+.3f}' for v in cal['bias'])}  validation ECE {cal['val_ece_before']:.4f} -> "
              f"{cal['val_ece_after']:.4f}")
    if len(config.labels) > 1:
        for name, per_label in metrics["heldout_per_label"].items():
            counts = per_label["confusion"]
            print(f"    {name}: accuracy {per_label['accuracy']:.4f}  ROC AUC {_format_auc(per_label['roc_auc'])}  "
                  f"threshold {per_label['threshold']:.4f}: TP {counts['tp']}  FP {counts['fp']}  TN {counts['tn']}  "
                  f"FN {counts['fn']}")
    print(f"  final bias {', '.join(f'{b:+.3f}' for b in metrics['final_bias'])}")
    for message in metrics.get("warnings", []):
        print(f"  warning: {message}")
    print(f"  checkpoint: {path}")


def _format_auc(value: float | None) -> str:
    return "n/a (one class in the held-out split)" if value is None else f"{value:.4f}"
