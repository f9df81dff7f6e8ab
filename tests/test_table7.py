"""experiments/table7.py's table: mean ± sd over seeds, missing runs, runs of earlier sessions kept."""
import json
import statistics
from pathlib import Path

import pytest
import torch

from experiments import table7

METRICS = {"das_sm": 0.5, "das_sm_forward": 0.4, "das_sm_backward": 0.6, "das": 0.3, "das_forward": 0.2,
           "das_backward": 0.4, "miou@0.1": 0.1, "train_minutes": 1.0, "das_sm_shapes": 146, "device": "cpu"}


def _score(args, variant, seed, das_sm):
    config = table7.run_config(args, "bed", variant, seed)
    report = Path(config.run.out) / config.run_name / "eval_test"
    report.mkdir(parents=True)
    (report / "metrics.json").write_text(json.dumps({"config": config.to_dict(),
                                                     "metrics": dict(METRICS, das_sm=das_sm)}))


def test_table_cells_missing_runs_and_earlier_sessions(tmp_path):
    argv = ["--categories", "bed", "--variants", "soft", "10", "--seeds", "0", "1", "2",
            "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--table-only"]
    args = table7.parse_args(argv)
    _score(args, "soft", 0, 0.5)
    _score(args, "soft", 2, 0.7)
    _score(args, "10", 1, 0.6)
    table7.main(argv)
    saved = json.loads((tmp_path / "results" / "table7.json").read_text())
    soft = saved["cells"]["bed"]["soft"]["das_sm"]
    assert soft["n"] == 2 and soft["mean"] == pytest.approx(0.6)
    assert soft["sd"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert saved["cells"]["bed"]["10"]["das_sm"] == {"mean": 0.6, "sd": None, "n": 1}
    assert len(saved["missing"]) == 3 and "bed/Soft-argmax/seed 1" in saved["missing"]
    table = (tmp_path / "results" / "table7.md").read_text()
    assert "| Soft-argmax | 2 | 60.0 ± 14.1 | 58.0 |" in table

    # the run folders are gone (a fresh GPU machine): the runs recorded in table7.json still count
    (tmp_path / "runs").rename(tmp_path / "gone")
    table7.main(argv)
    assert json.loads((tmp_path / "results" / "table7.json").read_text())["cells"] == saved["cells"]
    # another protocol neither uses nor drops them
    table7.main(argv + ["--epochs", "7"])
    other = json.loads((tmp_path / "results" / "table7.json").read_text())
    assert other["cells"] == {} and len(other["missing"]) == 6 and len(other["runs"]) == 3


def _records(seed, shapes=6):
    """records.pt of a run scored on ``shapes`` test shapes and ``shapes + 2`` shapes in all, random keypoints."""
    from pckeypoints.metrics.das import alignment_votes, keypoint_matches

    g = torch.Generator().manual_seed(seed)
    def scored(n):
        pred = torch.rand(n, 4, 3, generator=g)
        annotations = [(torch.rand(3, 3, generator=g), torch.randperm(5, generator=g)[:3]) for _ in range(n)]
        return pred, annotations
    pred, annotations = scored(shapes)
    votes, votes_all = alignment_votes(pred, annotations), alignment_votes(*scored(shapes + 2))
    return {"model_id": [f"m{i}" for i in range(shapes)], "das_sm_model_id": [f"m{i}" for i in range(shapes + 2)],
            "reconstruction": torch.rand(shapes, generator=g, dtype=torch.float64), "das_forward_votes": votes.forward,
            "das_backward_votes": votes.backward, "das_sm_forward_votes": votes_all.forward,
            "das_sm_backward_votes": votes_all.backward,
            "miou_matches": keypoint_matches(pred, [xyz for xyz, _ in annotations], None, 0.3)[:, 0]}


def test_sampling_minus_soft_bootstraps_the_seed_mean_difference(tmp_path):
    from pckeypoints.metrics.das import das_from_votes

    argv = ["--categories", "bed", "--variants", "soft", "10", "--seeds", "0", "1",
            "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--table-only"]
    args = table7.parse_args(argv)
    recs = {}
    for variant, seed in [("soft", 0), ("10", 0), ("soft", 1), ("10", 1)]:
        recs[variant, seed] = _records(seed) if variant == "soft" else _records(seed + 10)
        if variant == "10":  # reconstruction worse than soft's of the seed by 0.001 (seed 0), 0.003 (seed 1)
            recs[variant, seed]["reconstruction"] = recs["soft", seed]["reconstruction"].double() + 0.001 + 0.002 * seed
        _score(args, variant, seed, 0.5)
        path = Path(args.runs) / table7.run_config(args, "bed", variant, seed).run_name / "eval_test" / "records.pt"
        torch.save(recs[variant, seed], path)
    runs = {("bed", v, s): {} for v, s in recs}
    cell = table7.sampling_minus_soft(args, runs)["bed"]["10"]

    def das(r, prefix, self_pairs):
        return float(das_from_votes(r[f"{prefix}_forward_votes"].sum(0), r[f"{prefix}_backward_votes"].sum(0),
                                    len(r[f"{prefix}_forward_votes"]), self_pairs)[0])
    for metric, prefix, self_pairs in (("das", "das", False), ("das_sm", "das_sm", True)):
        want = sum(das(recs["10", s], prefix, self_pairs) - das(recs["soft", s], prefix, self_pairs) for s in (0, 1)) / 2
        assert cell[metric]["diff"] == pytest.approx(want)
        assert cell[metric]["low"] <= cell[metric]["diff"] <= cell[metric]["high"]
    # the seed-mean reconstruction difference is +0.002 on every shape, hence on every resample
    for end in ("diff", "low", "high"):
        assert cell["reconstruction"][end] == pytest.approx(0.002, abs=1e-9)
    assert cell["das"]["seeds"] == [0, 1]
