"""``qualiface eval edc`` with CliRunner: files written, numbers equal to the library's, clear errors."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from qualiface.cli.app import app
from qualiface.eval.edc import edc, edc_oracle


def write_pairs(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    label = (np.arange(n) % 3 == 0).astype(int)
    good_a, good_b = rng.random(n), rng.random(n)
    noise = rng.random(n)
    score = np.where(label == 1, 0.2 + 0.5 * np.minimum(good_a, good_b), 0.0) + 0.1 * rng.standard_normal(n)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["score", "label", "good_a", "good_b", "noise"])
        writer.writerows(zip(score, label, good_a, good_b, noise, strict=True))
    return score, label, good_a, good_b, noise


def test_help():
    result = CliRunner().invoke(app, ["eval", "edc", "--help"])
    assert result.exit_code == 0
    assert "--convention" in result.output


def test_writes_json_csv_plot_and_report(tmp_path):
    score, label, good_a, good_b, _ = write_pairs(tmp_path / "pairs.csv")
    out = tmp_path / "out"
    args = ["eval", "edc", str(tmp_path / "pairs.csv"), "--out", str(out), "--starting-error", "0.1"]
    result = CliRunner().invoke(app, [*args, "--discard-limit", "0.25", "--no-progress"])
    assert result.exit_code == 0, result.output
    for name in ("good", "noise", "reference_random", "reference_oracle"):
        assert (out / f"{name}.json").is_file()
        assert (out / f"{name}.csv").is_file()
    assert (out / "edc_starting_error_0.1.png").stat().st_size > 1000
    assert "edc_starting_error_0.1.png" in (out / "report.md").read_text()
    saved = json.loads((out / "good.json").read_text())
    expected = edc(score, label, good_a, good_b, starting_error=0.1, discard_limits=0.25)
    curve = saved["curves"]["starting_error=0.1"]
    np.testing.assert_allclose(curve["error_fractions"], expected.curves["starting_error=0.1"].error_fractions)
    assert curve["pauc"]["0.25"] == expected.curves["starting_error=0.1"].pauc[0.25]
    oracle = json.loads((out / "reference_oracle.json").read_text())["curves"]["starting_error=0.1"]
    assert (
        oracle["pauc"]["0.25"]
        == edc_oracle(score, label, starting_error=0.1, discard_limits=0.25).curves["starting_error=0.1"].pauc[0.25]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["good"]["starting_error=0.1/pauc@0.25"] < summary["noise"]["starting_error=0.1/pauc@0.25"]


def test_quality_file_and_recomputed_convention(tmp_path):
    score, label, good_a, good_b, _ = write_pairs(tmp_path / "pairs.csv")
    np.savez(tmp_path / "quality.npz", good=np.stack([good_a, good_b], axis=1), pair=np.minimum(good_a, good_b))
    out = tmp_path / "out"
    args = ["eval", "edc", str(tmp_path / "pairs.csv"), "--quality", str(tmp_path / "quality.npz")]
    args += ["--out", str(out), "--convention", "crfiqa", "--fmr", "0.01", "--no-references", "--no-plot"]
    result = CliRunner().invoke(app, [*args, "--no-report", "--no-progress"])
    assert result.exit_code == 0, result.output
    good = json.loads((out / "good.json").read_text())["curves"]["fmr=0.01"]
    pair = json.loads((out / "pair.json").read_text())["curves"]["fmr=0.01"]
    expected = edc(score, label, good_a, good_b, convention="crfiqa", fmr=0.01).curves["fmr=0.01"]
    assert good["auc"] == pytest.approx(expected.auc, rel=1e-15)
    assert pair["error_fractions"] == good["error_fractions"]
    assert not (out / "reference_random.json").exists()


def test_errors_exit_nonzero_with_message(tmp_path):
    write_pairs(tmp_path / "pairs.csv")
    runner = CliRunner()
    missing = runner.invoke(app, ["eval", "edc", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2
    assert "nope.csv: no such file" in missing.output
    bad_method = runner.invoke(app, ["eval", "edc", str(tmp_path / "pairs.csv"), "--method", "blur"])
    assert bad_method.exit_code == 2
    assert "no quality method ['blur']" in bad_method.output
    bad_fmr = runner.invoke(
        app, ["eval", "edc", str(tmp_path / "pairs.csv"), "--fmr", "2", "--out", str(tmp_path / "o")]
    )
    assert bad_fmr.exit_code == 2
    assert "fmr: 2.0 is outside" in bad_fmr.output


def test_lower_is_better_matches_negated_quality(tmp_path):
    score, label, good_a, good_b, _ = write_pairs(tmp_path / "pairs.csv")
    np.savez(tmp_path / "unc.npz", unc=np.stack([-good_a, -good_b], axis=1))
    out = tmp_path / "out"
    args = ["eval", "edc", str(tmp_path / "pairs.csv"), "--quality", str(tmp_path / "unc.npz"), "--out", str(out)]
    args += ["--lower-is-better", "--convention", "magface", "--fmr", "0.01", "--no-references", "--no-plot"]
    result = CliRunner().invoke(app, [*args, "--no-report"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "unc.json").read_text())
    assert saved["pair_quality"] == "max"
    assert saved["higher_is_better"] is False
    expected = edc(score, label, good_a, good_b, convention="magface", fmr=0.01).curves["fmr=0.01"]
    stored = np.array(saved["curves"]["fmr=0.01"]["error_fractions"], dtype=float)  # NaN is stored as null
    np.testing.assert_array_equal(stored, expected.error_fractions)
    assert np.isnan(stored[-1])  # 20 pairs kept at 95 %: too few impostors for the MagFace rule


def test_rejection_curves_are_written_plotted_and_equal_the_library(tmp_path):
    from qualiface.eval.edc import pair_quality
    from qualiface.eval.uncertainty import rejection_curve

    score, label, good_a, good_b, _ = write_pairs(tmp_path / "pairs.csv")
    out = tmp_path / "out"
    args = ["eval", "edc", str(tmp_path / "pairs.csv"), "--out", str(out), "--fmr", "0.01", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "rejection_good.json").read_text())
    expected = rejection_curve(score, label, pair_quality(good_a, good_b, "min"), fars=(0.01,))
    np.testing.assert_allclose(saved["tar"]["0.01"], expected.tar[0.01], equal_nan=True)
    assert (out / "rejection_far_0.01.png").stat().st_size > 1000
    assert "rejection_far_0.01.png" in (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["good"]["rejection_auc_far_0.01"] == pytest.approx(expected.auc[0.01])


def test_summary_carries_references_and_small_sample_markers(tmp_path):
    from qualiface.eval.edc import edc_random

    score, label, *_ = write_pairs(tmp_path / "pairs.csv", n=420)  # every third pair mated
    assert int((label == 0).sum()) == 280
    out = tmp_path / "out"
    args = ["eval", "edc", str(tmp_path / "pairs.csv"), "-o", str(out), "--fmr", "0.001", "--fmr", "0.01"]
    result = CliRunner().invoke(app, [*args, "--no-plot", "--no-progress", "--no-rejection"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    oracle = edc_oracle(score, label, fmr=[0.001, 0.01]).curves
    random = edc_random(score, label, fmr=[0.001, 0.01], progress=False).curves
    for method in ("good", "noise"):
        values = summary[method]
        for point in ("fmr=0.001", "fmr=0.01"):
            for limit in ("0.2", "0.3"):
                assert values[f"{point}/pauc@{limit}/oracle"] == oracle[point].pauc[float(limit)]
                assert values[f"{point}/pauc@{limit}/random"] == random[point].pauc[float(limit)]
                assert values[f"{point}/pauc-best@{limit}/random"] == random[point].pauc_minus_best[float(limit)]
        assert values["fmr=0.001/measurable"] is False  # 280 < 1,000 non-mated pairs
        assert values["fmr=0.01/measurable"] is True
        assert values["fmr=0.001/n_nonmated"] == 280
    nonmated = score[label == 0]
    assert summary["good"]["fmr=0.001/achieved_fmr"] == np.mean(nonmated >= np.quantile(nonmated, 1 - 0.001))
    assert "warning: fmr=0.001: FMR 0.001 cannot be measured on 280 non-mated pairs" in result.output
    report = (out / "report.md").read_text()
    assert "n/m (needs ≥ 1,000 non-mated pairs, has 280)" in report


def test_a_previous_run_is_not_overwritten_without_overwrite(tmp_path):
    write_pairs(tmp_path / "pairs.csv")
    args = ["eval", "edc", str(tmp_path / "pairs.csv"), "-o", str(tmp_path / "o"), "--fmr", "0.01", "--no-plot"]
    args += ["--no-references", "--no-rejection", "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2
    assert "holds a previous run (summary.json)" in again.output
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
