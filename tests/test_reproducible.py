"""The same training command and seed give a byte-identical checkpoint file."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import save_checkpoint
from models.smoother import MonotoneSmoother, SmootherConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_saving_the_same_model_twice_gives_the_same_bytes(tmp_path):
    model = MonotoneSmoother(SmootherConfig(kernel_size=5))
    first = save_checkpoint(tmp_path / "a" / "m.ckpt", model, metrics={"x": 1.0}, history={"loss": [1.0, 0.5]})
    second = save_checkpoint(tmp_path / "b" / "other-name.ckpt", model, metrics={"x": 1.0}, history={"loss": [1.0, 0.5]})
    assert first.read_bytes() == second.read_bytes()
    # no temporary file is left behind
    assert sorted(p.name for p in first.parent.iterdir()) == ["m.ckpt"]


@pytest.mark.parametrize(
    "args",
    [
        ["smoother", "--data", str(DATA / "nile.csv"), "--column", "value", "--epochs", "60"],
        ["classifier", "--data", str(DATA / "spam7.csv"), "--label", "spam", "--epochs", "3", "--hidden", "8",
         "--activation", "tanh", "--transform", "log1p", "--calibrate"],
    ],
    ids=["smoother", "classifier"],
)
def test_same_command_and_seed_give_a_byte_identical_checkpoint(tmp_path, args):
    paths = []
    for run in range(2):
        # the same --out each time (a different path would be recorded nowhere, but keep it the same command)
        out = tmp_path / f"run{run}" / "model.ckpt"
        result = subprocess.run(
            [sys.executable, "-m", "monoserve.cli", "--log-level", "WARNING", "train", *args, "--seed", "3",
             "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        paths.append(out)
    assert sha256(paths[0]) == sha256(paths[1])
    payload = torch.load(paths[0], weights_only=True)
    assert payload["history"]  # the training curve is part of the checkpoint
