"""Increase-only evasion attack on an exported classifier, run by ONNX Runtime (the served function).

The attacker controls a flagged positive (e.g. a spam e-mail the model catches) and may only *raise*
feature values (add content), each by at most `budget` standard deviations of that feature. The
attack searches that box for a point the model scores below its threshold:

1. starting points: the row itself, every corner of the box (all 2^F corners for F <= 12 features,
   random corners otherwise) and `restarts` uniform random points inside it;
2. from the best start, projected sign-gradient descent with finite-difference gradients (forward
   differences on ONNX Runtime, so coordinated moves of several features are tried too);
3. from the best point so far, greedy coordinate search: each round tries setting every feature to
   each of `levels` evenly spaced values of its range and keeps the single move that lowers the
   score most, until no move helps or the row is evaded.

It needs only the artifact's outputs, so it attacks the model exactly as served (no torch). A model whose score is
non-decreasing in every feature cannot be evaded at any budget; an unconstrained one usually can.
A random check of that property (pairs x <= x') is reported too.

Imports numpy, onnxruntime and models.data only: never torch, export/ or service/.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from models.data import DataError, Table, read_table, split_indices

logger = logging.getLogger(__name__)

DEFAULT_BUDGETS = (0.5, 1.0, 2.0, 5.0)
ATTACK_JSON = "attack.json"
CARD_MD = "card.md"
CARD_SECTION = "## Evasion attack (increase-only)"
MAX_EXACT_CORNER_FEATURES = 12

Scorer = Callable[[np.ndarray], np.ndarray]  # [N, F] float32 -> [N, n_labels] probabilities


class AttackError(ValueError):
    """Bad attack input: not a classifier version, unknown label, missing file ..."""


@dataclass
class Target:
    version_dir: Path
    manifest: dict
    features: list[str]
    directions: list[str]
    labels: list[str]
    thresholds: list[float]  # per label, in `labels` order (the manifest's `thresholds`, else its `threshold`)
    score: Scorer


def load_target(version_dir: str | Path) -> Target:
    """A published classifier version: its manifest (read as JSON) and an ONNX Runtime session."""
    import onnxruntime as ort

    version_dir = Path(version_dir)
    manifest_path = version_dir / "manifest.json"
    if not manifest_path.is_file():
        raise AttackError(f"{version_dir}: no manifest.json (expected a published version DIR/NAME/VERSION)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("kind") != "classifier" or not manifest.get("classifier"):
        raise AttackError(f"{version_dir}: the attack needs a classifier, this version is a {manifest.get('kind')!r}")
    onnx_file = next((f["path"] for f in manifest.get("files", []) if f.get("format") == "onnx"), None)
    if onnx_file is None or not (version_dir / onnx_file).is_file():
        raise AttackError(f"{version_dir}: no ONNX artifact (the attack runs the served ONNX model)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # tiny model; threads only add contention
    session = ort.InferenceSession(str(version_dir / onnx_file), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def score(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    info = manifest["classifier"]
    return Target(
        version_dir=version_dir,
        manifest=manifest,
        features=[f["name"] for f in info["features"]],
        directions=[f.get("direction", "increasing") for f in info["features"]],
        labels=list(info["labels"]),
        thresholds=[float(t) for t in info.get("thresholds") or [info.get("threshold", 0.5)] * len(info["labels"])],
        score=score,
    )


def attack_rows(table: Table, manifest: dict) -> tuple[np.ndarray, str]:
    """The held-out rows of the model's own split when `table` is its training file, else every row."""
    provenance = manifest.get("provenance") or {}
    split = provenance.get("split") or {}
    if provenance.get("sha256") == table.sha256 and {"seed", "val_fraction", "test_fraction"} <= split.keys():
        rows = split_indices(table.n_rows, split["val_fraction"], split["test_fraction"], split["seed"])["test"]
        return rows, "held-out split of the training file"
    return np.arange(table.n_rows), "every row (not the model's training file)"


def _score_batched(score: Scorer, x: np.ndarray, label: int, chunk: int = 65536) -> np.ndarray:
    return np.concatenate([score(x[i : i + chunk])[:, label] for i in range(0, x.shape[0], chunk)])


def _corner_masks(n_features: int, rng: np.random.Generator, random_corners: int = 256) -> np.ndarray:
    if n_features <= MAX_EXACT_CORNER_FEATURES:
        codes = np.arange(2**n_features)
        return ((codes[:, None] >> np.arange(n_features)) & 1).astype(np.float64)  # [2^F, F]
    return (rng.random((random_corners, n_features)) < 0.5).astype(np.float64)


def evade(
    score: Scorer,
    x: np.ndarray,
    upper: np.ndarray,
    threshold: float,
    label: int = 0,
    restarts: int = 32,
    levels: int = 9,
    max_rounds: int = 30,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Lowest score found for each row of x [N, F] inside the box [x, upper]; -> (points, scores)."""
    rng = np.random.default_rng(seed)
    n, f = x.shape
    width = upper - x  # [N, F] >= 0
    starts = [np.zeros((1, f)), _corner_masks(f, rng)]
    if restarts:
        starts.append(rng.random((restarts, f)))
    fractions = np.concatenate(starts)  # [S, F] positions inside the box, 0 = the row itself
    candidates = x[:, None, :] + fractions[None] * width[:, None, :]  # [N, S, F]
    scores = _score_batched(score, candidates.reshape(-1, f), label).reshape(n, -1)
    best_index = scores.argmin(axis=1)
    best = candidates[np.arange(n), best_index]  # [N, F]
    best_score = scores[np.arange(n), best_index]
    best, best_score = _gradient_descent(score, x, upper, best, best_score, threshold, label)

    grid = np.linspace(0.0, 1.0, levels)
    active = best_score >= threshold
    for _ in range(max_rounds):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        # every single-coordinate move: [R, F * levels, F]
        moves = np.repeat(best[rows][:, None, :], f * levels, axis=1)
        feature_of = np.repeat(np.arange(f), levels)
        values = x[rows][:, feature_of] + np.tile(grid, f)[None] * width[rows][:, feature_of]
        moves[:, np.arange(f * levels), feature_of] = values
        move_scores = _score_batched(score, moves.reshape(-1, f), label).reshape(rows.size, -1)
        pick = move_scores.argmin(axis=1)
        improved = move_scores[np.arange(rows.size), pick] < best_score[rows] - 1e-7
        if not improved.any():
            break
        better = rows[improved]
        best[better] = moves[np.flatnonzero(improved), pick[improved]]
        best_score[better] = move_scores[np.flatnonzero(improved), pick[improved]]
        active = np.zeros(n, dtype=bool)
        active[better] = best_score[better] >= threshold
    return best, best_score


def _gradient_descent(
    score: Scorer, x: np.ndarray, upper: np.ndarray, start: np.ndarray, start_score: np.ndarray,
    threshold: float, label: int, steps: int = 20, step_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected sign-gradient descent inside the box from `start`, gradients by forward finite
    differences (one ONNX Runtime batch of N * (F + 1) rows per step); keeps each row's best point."""
    n, f = x.shape
    width = upper - x
    eps = np.maximum(1e-3 * width, 1e-6)  # [N, F]
    point, best, best_score = start.copy(), start.copy(), start_score.copy()
    for _ in range(steps):
        rows = np.flatnonzero(best_score >= threshold)
        if rows.size == 0:
            break
        base = point[rows]
        probes = np.repeat(base[:, None, :], f + 1, axis=1)  # [R, F+1, F]: the point, then one nudge per feature
        probes[:, np.arange(1, f + 1), np.arange(f)] += eps[rows]
        values = _score_batched(score, probes.reshape(-1, f), label).reshape(rows.size, f + 1)
        gradient = (values[:, 1:] - values[:, :1]) / eps[rows]
        point[rows] = np.clip(base - step_fraction * width[rows] * np.sign(gradient), x[rows], upper[rows])
        moved = _score_batched(score, point[rows], label)
        better = moved < best_score[rows]
        best[rows[better]] = point[rows[better]]
        best_score[rows[better]] = moved[better]
    return best, best_score


def monotonicity_check(
    score: Scorer, x: np.ndarray, std: np.ndarray, increasing: np.ndarray, label: int, pairs: int, seed: int
) -> dict:
    """Random pairs x <= x' (raising a random subset of the increasing features by up to 2 std):
    how often the score fell, and by how much at most."""
    rng = np.random.default_rng(seed)
    base = x[rng.integers(0, x.shape[0], pairs)]
    raise_by = rng.random(base.shape) * 2.0 * std * (rng.random(base.shape) < 0.5) * increasing
    before = _score_batched(score, base, label)
    after = _score_batched(score, base + raise_by, label)
    drop = before - after
    return {"pairs": int(pairs), "violations": int((drop > 1e-6).sum()), "max_drop": float(max(drop.max(), 0.0))}


def run_attack(
    version_dir: str | Path,
    data: str | Path,
    label_column: str,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    restarts: int = 32,
    seed: int = 0,
    pairs: int = 10000,
) -> dict:
    """The attack report (JSON-ready) of one published classifier version on one CSV file."""
    target = load_target(version_dir)
    table = read_table(data)
    table.require_columns(target.features, "feature")
    table.require_columns([label_column], "label column")
    label = target.labels.index(label_column) if label_column in target.labels else 0
    threshold = target.thresholds[label]  # the attacked label's own decision threshold
    rows, rows_note = attack_rows(table, target.manifest)
    x_all = table.matrix(target.features)
    y_all = table.numeric(label_column)
    std = x_all.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    x, y = x_all[rows], y_all[rows]
    positives = x[y == 1]
    flagged = positives[_score_batched(target.score, positives, label) >= threshold] if positives.size else positives
    logger.info("attacking %d flagged positives of %d positives (%s)", flagged.shape[0], positives.shape[0], rows_note)
    evasion_rate, evaded, mean_drop = [], [], []
    for budget in budgets:
        if flagged.shape[0] == 0:
            evasion_rate.append(None)
            evaded.append(0)
            mean_drop.append(None)
            continue
        start = _score_batched(target.score, flagged, label)
        _, found = evade(target.score, flagged, flagged + budget * std, threshold, label, restarts, seed=seed)
        hits = int((found < threshold).sum())
        evaded.append(hits)
        evasion_rate.append(hits / flagged.shape[0])
        mean_drop.append(float((start - found).mean()))
    increasing = np.array([d == "increasing" for d in target.directions], dtype=np.float64)
    manifest = target.manifest
    return {
        "model": {"name": manifest.get("name"), "version": manifest.get("version"),
                  "scope": manifest["classifier"].get("scope"), "version_dir": str(target.version_dir)},
        "data": str(data),
        "label": target.labels[label],
        "rows": rows_note,
        "n_rows": int(rows.size),
        "n_positives": int(positives.shape[0]),
        "n_attacked": int(flagged.shape[0]),
        "threshold": threshold,
        "budgets": [float(b) for b in budgets],
        "budget_unit": "standard deviations of each feature (over the data file), added only",
        "evasion_rate": evasion_rate,
        "evaded": evaded,
        "mean_score_drop": mean_drop,
        "monotonicity_check": monotonicity_check(target.score, x_all, std, increasing, label, pairs, seed),
        "method": f"on ONNX Runtime: box corners + {restarts} random restarts, finite-difference sign-gradient "
                  "descent, then greedy coordinate search",
        "seed": seed,
    }


def render_markdown(report: dict) -> str:
    lines = [
        CARD_SECTION,
        "",
        f"An attacker who may only raise feature values, each by at most B standard deviations, tries to bring "
        f"{report['n_attacked']} flagged positives ('{report['label']}', {report['rows']}) below the threshold "
        f"{report['threshold']:.4g} ({report['method']}).",
        "",
        "| budget B (std) | evaded | evasion rate |",
        "|---|---|---|",
    ]
    for budget, hits, rate in zip(report["budgets"], report["evaded"], report["evasion_rate"]):
        lines.append(f"| {budget:g} | {hits} | {'n/a' if rate is None else f'{rate:.1%}'} |")
    check = report["monotonicity_check"]
    lines += ["", f"Random monotonicity check: {check['violations']} of {check['pairs']} pairs x <= x' lowered the "
              f"score (largest drop {check['max_drop']:.3g}).", ""]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


ATTACK_DIR_SUFFIX = ".attack"  # REPO/NAME/VERSION.attack/: not an integer, so never taken for a version


def attack_directory(version_dir: str | Path) -> Path:
    """Where the attack of REPO/NAME/VERSION goes: the sibling REPO/NAME/VERSION.attack/."""
    version_dir = Path(version_dir)
    return version_dir.with_name(version_dir.name + ATTACK_DIR_SUFFIX)


def attach_to_version(version_dir: str | Path, report: dict) -> list[Path]:
    """Write attack.json and the version's card with the attack table (replacing an earlier attack
    section) into VERSION.attack/, next to the version. A published version is immutable: nothing
    is written into it (its files may be covered by a signature; contract.signing)."""
    version_dir = Path(version_dir)
    target = attack_directory(version_dir)
    target.mkdir(exist_ok=True)
    written = [target / ATTACK_JSON]
    _write_atomic(written[0], json.dumps(report, indent=2) + "\n")
    card = target / CARD_MD if (target / CARD_MD).is_file() else version_dir / CARD_MD
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if CARD_SECTION in text:  # replace the previous section (it runs to the next "## " heading)
            head, _, rest = text.partition(CARD_SECTION)
            next_heading = rest.find("\n## ")
            text = head + (rest[next_heading + 1 :] if next_heading >= 0 else "")
        text = text.rstrip("\n") + "\n\n" + render_markdown(report)
        _write_atomic(target / CARD_MD, text)
        written.append(target / CARD_MD)
    return written


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AttackError(f"--budgets: expected comma-separated numbers like 0.5,1,2,5, got {text!r}") from None
    if not budgets or any(not 0 < b < float("inf") for b in budgets):
        raise AttackError(f"--budgets: expected positive finite numbers, got {text!r}")
    return budgets


def run_cli(args: Any) -> int:
    """`monoserve attack` handler: exit 0 with the report, 2 for bad input."""
    import sys

    try:
        budgets = parse_budgets(args.budgets)
        report = run_attack(args.version_dir, args.data, args.label, budgets, args.restarts, args.seed, args.pairs)
    except (AttackError, DataError) as exc:
        print(f"monoserve attack: error: {exc}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(args.report, json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    if args.card:
        try:
            for path in attach_to_version(args.version_dir, report):
                print(f"wrote {path}")
        except OSError as exc:  # a read-only repository: the report still stands
            logger.warning("could not write the attack next to the version (%s); use --no-card", exc)
    return 0
