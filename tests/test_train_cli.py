"""`monoserve train ...` run for real in a subprocess: good runs write checkpoints, bad input exits 2."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
EXIT_USAGE = 2


def monoserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monoserve.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_parser_and_train_command_import_no_torch():
    code = (
        "import sys; from monoserve.cli import build_parser; "
        "build_parser().parse_args(['train', 'smoother', '--data', 'x.csv', '--out', 'y']); "
        "assert 'torch' not in sys.modules, 'torch imported at parse time'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_train_smoother_on_nile_writes_a_checkpoint_that_beats_naive(tmp_path):
    from models.checkpoint import load_checkpoint

    out = tmp_path / "nested" / "smoother.ckpt"
    result = monoserve("train", "smoother", "--data", str(DATA / "nile.csv"), "--column", "value", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "kernel (oldest -> newest tap)" in result.stdout and str(out) in result.stdout
    model, payload = load_checkpoint(out)
    assert payload["kind"] == "smoother" and payload["config"]["mode"] == "causal"
    metrics = payload["metrics"]
    assert metrics["heldout_mse"] < metrics["naive_mse"]
    provenance = payload["provenance"]
    assert provenance["data_file"] == "nile.csv" and provenance["columns"] == ["value"]
    assert provenance["sha256"] == hashlib.sha256((DATA / "nile.csv").read_bytes()).hexdigest()
    assert provenance["n_rows"] == 100 and provenance["split"]["n_train"] == 80
    assert len(provenance["scaling"]["mean"]) == 1 and provenance["scaling"]["scale"][0] > 0
    # the printed kernel is the checkpoint's kernel
    printed = next(line for line in result.stdout.splitlines() if "kernel (oldest" in line).split(":")[1].split()
    assert [float(v) for v in printed] == pytest.approx(model.kernel.detach().tolist(), abs=1e-4)


def test_train_classifier_is_reproducible_with_a_seed(tmp_path):
    """One run in a subprocess, one in this process (same entry point): identical checkpoints."""
    import torch

    from models.checkpoint import read_checkpoint
    from monoserve.cli import main

    args = ["train", "classifier", "--data", str(DATA / "spam7.csv"), "--label", "spam", "--epochs", "3",
            "--hidden", "8", "--method", "project", "--seed", "7"]
    first, second = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    result = monoserve(*args, "--out", str(first))
    assert result.returncode == 0, result.stderr
    assert "ROC AUC" in result.stdout and str(first) in result.stdout
    torch.manual_seed(12345)  # the handler must seed everything itself
    assert main([*args, "--out", str(second)]) == 0
    a, b = read_checkpoint(first), read_checkpoint(second)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["metrics"] == b["metrics"]
    assert a["config"]["method"] == "project" and a["config"]["hidden"] == [8]
    assert a["provenance"]["features"] == ["crl.tot", "dollar", "bang", "money", "n000", "make"]
    assert a["provenance"]["labels"] == ["spam"] and a["provenance"]["split"]["seed"] == 7
    # a different seed gives a different model (the seed is really used)
    assert main([*args[:-1], "8", "--out", str(tmp_path / "c.ckpt")]) == 0
    c = read_checkpoint(tmp_path / "c.ckpt")
    assert not torch.equal(a["state_dict"]["layers.0.weight"], c["state_dict"]["layers.0.weight"])


NILE = str(DATA / "nile.csv")
SPAM = str(DATA / "spam7.csv")

# (name, csv text or None, arguments with {csv} for the written file, fragments the message must contain)
BAD_INPUT = [
    ("smoother-missing-file", None, ["train", "smoother", "--data", "{tmp}/nope.csv"], ["data file not found", "nope.csv"]),
    ("classifier-missing-file", None, ["train", "classifier", "--data", "{tmp}/nope.csv", "--label", "y"],
     ["data file not found", "nope.csv"]),
    ("missing-column", None, ["train", "smoother", "--data", NILE, "--column", "flow"],
     ["nile.csv", "unknown column 'flow'", "time, value"]),
    ("missing-label", None, ["train", "classifier", "--data", SPAM, "--label", "junk"],
     ["spam7.csv", "unknown label column 'junk'"]),
    ("non-numeric", "time,value\n1,1.0\n2,abc\n3,3.0\n4,\n5,5\n6,6\n7,7\n8,8\n9,9\n10,10\n",
     ["train", "smoother", "--data", "{csv}", "--kernel-size", "3"],
     ["bad.csv", "column 'value'", "2 non-numeric", "line 3 ('abc')", "line 5 ('')"]),
    ("nan-inf", "time,value\n1,1\n2,2\n3,nan\n4,4\n5,inf\n6,6\n7,7\n8,8\n9,9\n10,10\n",
     ["train", "smoother", "--data", "{csv}", "--kernel-size", "3"],
     ["bad.csv", "column 'value'", "2 NaN/Inf", "line 4", "line 6"]),
    ("nan-in-feature", "a,b,y\n1,2,0\n3,-inf,1\n5,6,0\n",
     ["train", "classifier", "--data", "{csv}", "--label", "y"], ["column 'b'", "NaN/Inf", "line 3"]),
    ("shorter-than-kernel", "time,value\n" + "".join(f"{t},{t % 3}\n" for t in range(12)),
     ["train", "smoother", "--data", "{csv}", "--kernel-size", "15"],
     ["bad.csv", "12 rows", "shorter than the kernel (15 taps)"]),
    ("even-kernel", None, ["train", "smoother", "--data", NILE, "--kernel-size", "8"], ["--kernel-size must be odd"]),
    ("one-class", "a,b,y\n1,2,1\n3,4,1\n5,6,1\n",
     ["train", "classifier", "--data", "{csv}", "--label", "y"], ["bad.csv", "label column 'y'", "single class"]),
    ("too-few-rows", "a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n",
     ["train", "classifier", "--data", "{csv}", "--label", "y"], ["bad.csv", "4 rows are too few"]),
    ("label-not-binary", "a,b,y\n1,2,0\n3,4,2\n5,6,1\n",
     ["train", "classifier", "--data", "{csv}", "--label", "y"], ["label column 'y' must hold 0 or 1", "line 3 (2)"]),
    ("unknown-feature", None, ["train", "classifier", "--data", SPAM, "--label", "spam", "--features", "bang", "cash"],
     ["unknown feature 'cash'", "spam7.csv"]),
    ("unknown-decreasing", None,
     ["train", "classifier", "--data", SPAM, "--label", "spam", "--decreasing", "cash"],
     ["--decreasing", "unknown feature name(s) 'cash'", "crl.tot"]),
    ("decreasing-with-final", None,
     ["train", "classifier", "--data", SPAM, "--label", "spam", "--scope", "final", "--decreasing", "make"],
     ["--decreasing need --scope all"]),
    ("free-with-final", None,
     ["train", "classifier", "--data", SPAM, "--label", "spam", "--scope", "final", "--free", "make"],
     ["--free need --scope all"]),
    ("denoise-without-target", None, ["train", "smoother", "--data", NILE, "--objective", "denoise"],
     ["--target-column"]),
    ("bad-hidden", None, ["train", "classifier", "--data", SPAM, "--label", "spam", "--hidden", "32,x"],
     ["--hidden", "32,x"]),
]


@pytest.mark.parametrize(("csv_text", "args", "fragments"), [case[1:] for case in BAD_INPUT],
                         ids=[case[0] for case in BAD_INPUT])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(tmp_path, csv_text, args, fragments):
    csv_path = write_csv(tmp_path / "bad.csv", csv_text) if csv_text is not None else tmp_path / "unused.csv"
    out = tmp_path / "out" / "model.ckpt"
    argv = [a.replace("{csv}", str(csv_path)).replace("{tmp}", str(tmp_path)) for a in args] + ["--out", str(out)]
    result = monoserve(*argv)
    assert result.returncode == EXIT_USAGE, (result.returncode, result.stdout, result.stderr)
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr}"
    assert "Traceback" not in result.stderr
    assert not out.exists() and not out.parent.exists(), "a checkpoint (or its folder) was written on bad input"


@pytest.mark.parametrize("mode", ["same", "causal", "valid"])
def test_train_smoother_denoise_in_each_mode(tmp_path, mode):
    """noisy -> clean with a known kernel, through the CLI entry point (in process: torch is loaded)."""
    import numpy as np

    from models.checkpoint import read_checkpoint
    from contract.modes import mode_pads
    from monoserve.cli import main

    rng = np.random.default_rng(0)
    kernel = np.array([0.05, 0.1, 0.15, 0.3, 0.4])
    noisy = rng.standard_normal(400).cumsum() + 3.0 * rng.standard_normal(400)
    left, right = mode_pads("same", 5)
    clean = np.correlate(np.pad(noisy, (left, right), mode="edge"), kernel, mode="valid")
    rows = "".join(f"{t},{a:.6f},{b:.6f}\n" for t, (a, b) in enumerate(zip(noisy, clean)))
    data = write_csv(tmp_path / "pairs.csv", "time,noisy,clean\n" + rows)
    out = tmp_path / "denoise.ckpt"
    code = main(["train", "smoother", "--data", str(data), "--objective", "denoise", "--target-column", "clean",
                 "--kernel-size", "5", "--mode", mode, "--out", str(out)])
    assert code == 0
    payload = read_checkpoint(out)
    assert payload["config"]["mode"] == mode
    assert payload["provenance"]["columns"] == ["noisy"] and payload["provenance"]["target_column"] == "clean"
    metrics = payload["metrics"]
    assert metrics["heldout_mse"] < 0.5 * metrics["identity_mse"], metrics


def test_forecast_shares_one_kernel_across_several_series(tmp_path, capsys):
    import numpy as np

    from models.checkpoint import load_checkpoint
    from monoserve.cli import main

    rng = np.random.default_rng(1)
    level = rng.standard_normal((2, 300)).cumsum(-1) * 0.3
    series = level + rng.standard_normal((2, 300)) * [[1.0], [50.0]] + [[0.0], [1000.0]]  # very different scales
    rows = "".join(f"{t},{a:.5f},{b:.5f}\n" for t, (a, b) in enumerate(series.T))
    data = write_csv(tmp_path / "two.csv", "year,north,south\n" + rows)
    out = tmp_path / "two.ckpt"
    assert main(["train", "smoother", "--data", str(data), "--kernel-size", "7", "--out", str(out)]) == 0
    model, payload = load_checkpoint(out)
    assert payload["provenance"]["columns"] == ["north", "south"]  # 'year' left out by default
    assert payload["provenance"]["split"]["n_heldout_targets"] == 2 * 60
    assert model.kernel.shape == (7,)
    assert "[north, south]" in capsys.readouterr().out


def test_train_multilabel_classifier_with_directions(tmp_path, capsys):
    import numpy as np

    from models.checkpoint import load_checkpoint
    from monoserve.cli import main

    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 3))
    first = (x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=600) > 0).astype(int)
    second = (x[:, 0] + x[:, 2] ** 2 > 1).astype(int)
    rows = "".join(f"{a:.4f},{b:.4f},{c:.4f},{p},{q}\n" for (a, b, c), p, q in zip(x, first, second))
    data = write_csv(tmp_path / "multi.csv", "up,down,anyway,first,second\n" + rows)
    out = tmp_path / "multi.ckpt"
    code = main(["train", "classifier", "--data", str(data), "--label", "first", "second", "--decreasing", "down",
                 "--free", "anyway", "--epochs", "30", "--hidden", "16", "--out", str(out)])
    assert code == 0
    model, payload = load_checkpoint(out)
    assert payload["config"]["labels"] == ["first", "second"]
    assert payload["config"]["feature_names"] == ["up", "down", "anyway"]
    assert payload["config"]["directions"] == ["increasing", "decreasing", "free"]
    assert payload["metrics"]["heldout_per_label"]["first"]["roc_auc"] > 0.9
    assert payload["metrics"]["heldout_per_label"]["second"]["roc_auc"] > 0.6
    printed = capsys.readouterr().out
    assert "first: accuracy" in printed and "second: accuracy" in printed
