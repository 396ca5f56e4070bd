"""Smoother baselines (naive, seasonal naive, AR, SES), gaps, warnings and the smoother report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.metrics import detect_season, fit_ar, seasonal_naive
from models.smoother import MonotoneSmoother, SmootherConfig
from models.train_smoother import SmootherTrainOptions, convergence_warning, train_forecast

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def monoserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monoserve.cli", "--log-level", "WARNING", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_seasonal_naive_takes_the_value_whole_seasons_back():
    series = np.arange(20, dtype=np.float64)[None]
    for horizon, period in ((1, 4), (4, 4), (5, 4), (3, 1)):
        forecasts = seasonal_naive(series, horizon, period)
        k = int(np.ceil(horizon / period))
        for t in range(20 - horizon):
            source = t + horizon - period * k
            if source < 0:
                assert np.isnan(forecasts[0, t])
            else:
                assert forecasts[0, t] == series[0, source]


def test_detect_season_finds_a_cycle_and_not_a_random_walk():
    rng = np.random.default_rng(0)
    t = np.arange(240)
    seasonal = np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=t.size)
    assert detect_season(seasonal[None], 192) == 12
    walk = np.cumsum(rng.normal(size=400))[None]
    assert detect_season(walk, 320) is None


def test_ar_least_squares_recovers_an_ar2_process():
    rng = np.random.default_rng(1)
    x = np.zeros(3000)
    for i in range(2, x.size):
        x[i] = 0.6 * x[i - 1] - 0.3 * x[i - 2] + rng.normal()
    order, forecasts = fit_ar(x[None], 2400, 1)
    assert order == 2
    held = np.arange(2400, 2999)
    ar_mse = np.mean((forecasts[0, held] - x[held + 1]) ** 2)
    naive_mse = np.mean((x[held] - x[held + 1]) ** 2)
    assert ar_mse == pytest.approx(1.0, abs=0.12)  # the innovation variance: the best possible
    assert ar_mse < 0.7 * naive_mse


def test_given_ar_order_is_used():
    rng = np.random.default_rng(2)
    order, forecasts = fit_ar(rng.normal(size=(2, 200)), 160, 2, order=5)
    assert order == 5 and np.isnan(forecasts[:, :4]).all() and np.isfinite(forecasts[:, 4:]).all()


def test_convergence_warning_only_while_the_loss_still_falls():
    assert convergence_warning(list(np.linspace(2.0, 1.0, 100))) is not None
    assert convergence_warning([2.0] * 50 + [1.0] * 50) is None


def test_softmax_kernel_reaches_large_alpha_at_the_defaults_on_a_random_walk():
    """On a random walk the best forecast is the last value: alpha must grow far (issue: past 40)."""
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(size=300))[None]
    torch.manual_seed(0)
    model = MonotoneSmoother(SmootherConfig(kernel_size=31, param="softmax", mode="causal"))
    result = train_forecast(model, walk, SmootherTrainOptions(objective="forecast"))  # the defaults
    alpha = float(model.parametrizations.kernel[0].alpha(model.raw_parameters()["kernel.original"]).detach())
    assert alpha > 20, alpha  # from 1.5 at the start (issue 21: now fitted by the bounded search, not Adam)
    assert model.kernel[-1] > 0.8
    assert result.metrics["heldout_mse"] <= result.metrics["naive_mse"]  # the issue: it was 38% worse


def test_multi_series_metrics_are_scale_free_with_per_series_detail():
    rng = np.random.default_rng(4)
    small = np.cumsum(rng.normal(size=200))
    large = 1000.0 * np.cumsum(rng.normal(size=200))
    torch.manual_seed(0)
    model = MonotoneSmoother(SmootherConfig(kernel_size=5, mode="causal"))
    options = SmootherTrainOptions(objective="forecast", epochs=50, names=["small", "large"])
    result = train_forecast(model, np.stack([small, large]), options)
    heldout = result.metrics["heldout"]
    assert heldout["units"].startswith("standardized")
    detail = heldout["per_series"]
    assert set(detail) == {"small", "large"} and detail["large"]["mse"] > 1e4 * detail["small"]["mse"]
    scales = np.array(result.scaling["scale"])
    expected = np.mean([detail["small"]["mse"] / scales[0] ** 2, detail["large"]["mse"] / scales[1] ** 2])
    assert heldout["mse"] == pytest.approx(expected)
    for name in ("naive", "seasonal_naive", "ar", "ses"):
        assert heldout["baselines"][name] == pytest.approx(
            np.mean([detail["small"][name] / scales[0] ** 2, detail["large"][name] / scales[1] ** 2]))


def test_smoother_report_carries_the_four_baselines_and_a_warning_when_one_wins(tmp_path):
    out, report = tmp_path / "s.ckpt", tmp_path / "report.json"
    result = monoserve("train", "smoother", "--data", str(DATA / "sunspot_year.csv"), "--column", "value",
                       "--out", str(out), "--report", str(report))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    baselines = data["heldout"]["baselines"]
    assert set(baselines) == {"naive", "seasonal_naive", "ar", "ses"}
    assert data["heldout"]["baseline_settings"]["season"] == 11  # the sunspot cycle, detected
    # a positive increasing kernel cannot follow the cycle: AR wins, and the report says so
    assert baselines["ar"] < data["heldout"]["mse"]
    assert any("baseline beats the smoother" in w and "ar " in w for w in data["warnings"])
    assert "warning: a simple baseline beats the smoother" in result.stdout
    from models.checkpoint import read_checkpoint

    payload = read_checkpoint(out)
    assert payload["metrics"]["heldout"] == data["heldout"]
    assert len(payload["history"]["loss"]) == 400  # the loss curve, one value per step


def test_too_few_epochs_warn_that_training_has_not_converged(tmp_path):
    report = tmp_path / "r.json"
    result = monoserve("train", "smoother", "--data", str(DATA / "nile.csv"), "--column", "value", "--epochs", "30",
                       "--out", str(tmp_path / "s.ckpt"), "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert any("has not converged" in w for w in json.loads(report.read_text())["warnings"])


GAPPY = "time,value\n" + "".join(
    f"{t},{'' if t in (5, 6) else 'NA' if t == 20 else 10 + (t % 7)}\n" for t in range(60))


def test_gaps_are_refused_by_default_naming_rows_and_the_fill_flag(tmp_path):
    data = tmp_path / "gappy.csv"
    data.write_text(GAPPY)
    out = tmp_path / "s.ckpt"
    result = monoserve("train", "smoother", "--data", str(data), "--kernel-size", "3", "--out", str(out))
    assert result.returncode == 2
    assert "line 7 ('')" in result.stderr and "line 8 ('')" in result.stderr and "--fill" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("fill", ["interpolate", "drop"])
def test_fill_interpolates_or_drops_gaps(tmp_path, fill):
    data = tmp_path / "gappy.csv"
    data.write_text(GAPPY)
    out = tmp_path / "s.ckpt"
    result = monoserve("train", "smoother", "--data", str(data), "--kernel-size", "3", "--epochs", "50",
                       "--fill", fill, "--out", str(out))
    assert result.returncode == 0, result.stderr
    from models.checkpoint import read_checkpoint

    provenance = read_checkpoint(out)["provenance"]
    assert provenance["gaps"]["fill"] == fill and provenance["gaps"]["rows_with_gaps"] == 3
    assert provenance["gaps"]["lines"] == [7, 8, 22]
    assert provenance["split"]["n_train"] == int((60 if fill == "interpolate" else 57) * 0.8)


def test_fill_interpolates_linearly():
    from models.data import fill_gaps

    values = np.array([[1.0], [np.nan], [np.nan], [4.0], [np.nan]])
    filled, info = fill_gaps(values, "interpolate", Path("x.csv"), ["v"])
    np.testing.assert_allclose(filled[:, 0], [1, 2, 3, 4, 4])
    assert info["rows_with_gaps"] == 3
