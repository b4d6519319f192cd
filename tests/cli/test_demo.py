"""``qualiface demo --quick`` through CliRunner: every report file, the printed path, a complete metrics JSON.

Only what must hold for any run is checked; a 3-step run's accuracy and quality figures mean nothing. The full
demo (minutes) is not run here.
"""

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.config import config_from_dict
from qualiface.demo import demo_config

REPORT_FILES = ("config.yaml", "metrics.json", "roc.png", "edc.png", "summary.md")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_quick_writes_every_report_file_and_prints_the_path(quick_demo):
    out, output = quick_demo
    report = out / "report"
    for name in REPORT_FILES:
        assert (report / name).is_file(), name
        assert (report / name).stat().st_size > 0, name
    assert f"report: {report}" in output
    assert "accuracy" in output
    assert "Spearman" in output
    for name in ("config.yaml", "metrics.csv", "model.pt"):
        assert (out / "run" / name).is_file(), name
    summary = (report / "summary.md").read_text()
    assert "qualiface demo" in summary
    assert "chance" in summary
    assert "![EDC](edc.png)" in summary
    assert "(fp32 + channels_last)" in output
    assert "in fp32 + channels_last" in summary


def test_quick_metrics_have_the_expected_keys_and_finite_values(quick_demo):
    out, _ = quick_demo
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    ver, quality, edc = metrics["verification"], metrics["quality"], metrics["edc"]
    assert 0.0 <= ver["accuracy"] <= 1.0
    assert ver["chance_accuracy"] == 0.5
    for key in ("accuracy_std", "eer", "auc"):
        assert math.isfinite(ver[key]), key
        assert 0.0 <= ver[key] <= 1.0, key
    assert ver["tar_at_far"]
    for key in ("spearman_rho", "kendall_tau_b"):
        value = quality[key]
        assert value is None or -1.0 <= value <= 1.0, key  # a constant score of a 3-step model is allowed
    assert quality["estimator"] == "cr_fiqa"
    assert quality["n"] == metrics["held_out"]["images"]
    assert edc["pair_quality"] == "min"
    for limit, values in edc["pauc"].items():
        assert set(values) == {"model", "truth", "random", "oracle"}
        for name, value in values.items():
            assert math.isfinite(value), (limit, name)
            assert 0.0 <= value <= float(limit), (limit, name)
    assert metrics["training"]["steps"] == 3
    assert metrics["timing"]["total_seconds"] >= metrics["timing"]["train_seconds"] > 0


def test_report_config_is_the_resolved_valid_config(quick_demo):
    out, _ = quick_demo
    data = yaml.safe_load((out / "report" / "config.yaml").read_text())
    cfg = config_from_dict(data)
    assert cfg.head.name == "cr_fiqa"
    assert cfg.model.kwargs["quality_branch"] == "cr_fiqa"
    assert cfg.train.steps == 3


def test_full_config_is_valid_and_small():
    cfg = demo_config("runs/demo", progress=False)
    assert cfg.train.steps == 500
    assert cfg.train.out_dir.endswith("run")
    assert cfg.model.kwargs["input_size"] == cfg.data.synthetic.size
    assert demo_config("x", steps=7, overrides=["optim.lr=0.05"]).optim.lr == 0.05
    # pinned to the precision the README figures were measured in, whatever auto would choose on this CPU
    assert cfg.train.precision == "fp32"
    assert demo_config("x", overrides=["train.precision=bf16"]).train.precision == "bf16"


def test_help_lists_the_options():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--steps", "--quick", "--no-progress"):
        assert option in result.output


def test_a_second_demo_in_the_same_folder_replaces_the_first(quick_demo):
    out, _ = quick_demo
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "run" / "model.pt").is_file()
