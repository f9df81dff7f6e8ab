"""experiments/table7.py's table: mean ± sd over seeds, missing runs, runs of earlier sessions kept."""
import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
table7 = pytest.importorskip("table7")

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
