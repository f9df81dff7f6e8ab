"""pckeypoints.metrics.results: typed results, their flat JSON form and the tables written from them."""
import dataclasses
import json

from pckeypoints.config import TrainConfig
from pckeypoints.metrics.das import DualAlignment
from pckeypoints.metrics.results import AlignmentEvaluation, KeypointEvaluation, ReadoutScores
from pckeypoints.train.supervised import SupervisedTask


def scores(pck, geo_pck=None, ece_raw=None):
    return ReadoutScores(pck=pck, geo_pck=geo_pck, pck_coarse=0.9, mean_error=0.02, mean_within=0.4, ece=0.125,
                         ece_raw=ece_raw, brier=0.2, r_within=0.3)


def evaluation():
    curve = {round(t / 100, 6): t / 10 for t in range(11)}
    return KeypointEvaluation(0.01, "expectation", {"expectation": scores(0.1, 0.08, 0.25), "top": scores(0.5)},
                              curve, mean_confidence=0.6, calibration_r=0.7, calibration_r_continuous=0.75)


def test_keypoint_evaluation_round_trips_through_json():
    result = evaluation()
    flat = json.loads(json.dumps(result.to_dict()))
    assert KeypointEvaluation.from_dict(flat, "expectation") == result
    assert flat["pck@0.01/expectation"] == 0.1 and flat["geo_pck@0.01/expectation"] == 0.08
    assert flat["pck@0.05/top"] == 0.9 and flat["ece_raw/expectation"] == 0.25
    assert "geo_pck@0.01/top" not in flat and "ece_raw/top" not in flat  # not computed: left out
    assert flat["pck@0.10"] == 1.0 and flat["geo_pck@0.01"] == 0.08 and flat["mean_error"] == 0.02
    assert list(flat)[:9] == [f"{name}/expectation" for name in ("pck@0.01", "geo_pck@0.01", "pck@0.05", "mean_error",
                                                                 "mean_within", "ece", "ece_raw", "brier", "r_within")]
    assert dataclasses.asdict(result)["readouts"]["top"]["pck"] == 0.5
    assert result.monitored == 0.1 and result.monitored_name == "pck@0.01"


def test_alignment_evaluation_round_trips_through_json():
    report = AlignmentEvaluation(2.5, DualAlignment(0.5, 0.4, 0.6), 0.25, 0.1, DualAlignment(0.75, 0.7, 0.8), 9)
    flat = json.loads(json.dumps(report.to_dict()))
    assert flat == {"neg_reconstruction": -2.5, "das": 0.5, "das_forward": 0.4, "das_backward": 0.6, "das_sm": 0.75,
                    "das_sm_forward": 0.7, "das_sm_backward": 0.8, "miou@0.1": 0.25, "das_sm_shapes": 9}
    assert AlignmentEvaluation.from_dict(flat) == report
    cheap = AlignmentEvaluation(2.5, DualAlignment(0.5, 0.4, 0.6), 0.25, 0.1)
    assert set(cheap.to_dict()) == {"neg_reconstruction", "das", "das_forward", "das_backward", "miou@0.1"}
    assert AlignmentEvaluation.from_dict(cheap.to_dict()) == cheap and cheap.monitored == -2.5


def test_summary_table_shows_each_readouts_numbers():
    lines = SupervisedTask().summary(evaluation(), TrainConfig.from_fields(readout="top")).splitlines()
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in lines[2:4])}
    assert rows == {"expectation": ["0.1000", "0.0800", "0.9000", "0.0200", "0.1250", "0.2500"],
                    "top*": ["0.5000", "n/a", "0.9000", "0.0200", "0.1250", "n/a"]}


def test_report_files_hold_the_flat_form(tmp_path):
    from pckeypoints.evaluation.report import write_metrics

    config, result = TrainConfig.from_fields(readout="top"), evaluation()
    write_metrics(tmp_path, config, result.to_dict(), "bathtub sampling", SupervisedTask().summary(result, config))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert KeypointEvaluation.from_dict(saved["metrics"], "expectation") == result
    assert saved["config"]["eval"]["readout"] == "top"
    markdown = (tmp_path / "metrics.md").read_text()
    assert markdown.startswith("# bathtub sampling\n") and "| top* " in markdown
    assert "| pck@0.01/top | 0.5000 |" in markdown and "| calibration_r_continuous | 0.7500 |" in markdown
