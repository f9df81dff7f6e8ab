"""experiments/evidence.py: paired differences and the tables on hand-made per-keypoint records."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from experiments import evidence

ROOT = Path(__file__).resolve().parents[1]


def records(dist, clouds):
    dist = np.asarray(dist, dtype=np.float32)
    out = {"cloud": np.asarray(clouds, dtype=np.int32), "keypoint": np.zeros(len(dist), np.int32),
           "peak": np.full(len(dist), 0.5, np.float32)}
    for r in evidence.READOUTS:
        out[f"dist/{r}"] = dist
        out[f"geo/{r}"] = dist * 1.5
        out[f"within/{r}"] = np.full(len(dist), 0.3, np.float32)
    return out


def test_paired_difference_by_hand():
    clouds = [0, 0, 1, 1, 2, 2]
    always = records([0.0] * 6, clouds)
    never = records([1.0] * 6, clouds)
    assert evidence.paired_difference([never], [always], "expectation", False) == (100.0, 100.0, 100.0)
    same = evidence.paired_difference([always], [always], "top", True)
    assert same == (0.0, 0.0, 0.0)
    # seeds are averaged per keypoint: b is right on half the keypoints in one seed and all in the other
    half = records([0.0, 1.0] * 3, clouds)
    d, lo, hi = evidence.paired_difference([never, never], [half, always], "expectation", False)
    assert d == pytest.approx(75.0) and lo == pytest.approx(75.0) and hi == pytest.approx(75.0)
    # geodesic uses d < t strictly: 0.008 * 1.5 = 0.012 is wrong geodesically, right in Euclidean terms
    near = records([0.008] * 6, clouds)
    assert evidence.paired_difference([never], [near], "mode", True)[0] == 0.0
    with pytest.raises(ValueError, match="different test keypoints"):
        evidence.paired_difference([always], [records([0.0] * 4, [0, 0, 1, 1])], "expectation", False)


def write_records(results, methods, seeds=(0, 1)):
    """``results/records/cpu/bathtub_<method>_s<seed>.npz`` with ``records(dist, clouds)`` of each method."""
    clouds = [0, 0, 1, 1, 2, 2]
    metrics = {k: 0.5 for k in ("calibration_r", "calibration_r_continuous", "mean_within/expectation",
                                "pck@0.01/expectation", "ece/expectation", "brier/expectation")}
    for method, dist in methods.items():
        for seed in seeds:
            path = results / "records" / "cpu" / f"bathtub_{method}_s{seed}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = {"config": {}, "metrics": metrics, "epoch": 30, "model_id": ["a", "b", "c"]}
            np.savez_compressed(path, meta=np.array(json.dumps(meta)),
                                **{k.replace("/", "__"): v for k, v in records(dist, clouds).items()})


def test_tables_from_records(tmp_path):
    write_records(tmp_path, {"soft": [0.0, 1.0] * 3, "sampling10": [0.0] * 6})
    evidence.write_tables(tmp_path)
    table = (tmp_path / "table6.md").read_text()
    assert "| soft-argmax | 50.0 ± 0.0 | 50.0 ± 0.0 | 43.6 | 2 |" in table
    # distances 0 and 1 (geodesic 0 and 1.5): PCK 50 at every threshold; AUC 50, geodesic (d < t) 0 at t = 0
    assert ("| soft-argmax | 50.0 / 50.0 | 50.0 / 50.0 | 50.0 / 50.0 | 50.0 / 50.0 | 500.0 / 750.0 | 50.0 / 47.5 |"
            in table)
    assert "| sampling, Ns = 10 − soft-argmax | expectation | +50.0 [+50.0, +50.0] | +50.0 [+50.0, +50.0] |" in table
    numbers = json.loads((tmp_path / "evidence.json").read_text())
    assert numbers["tables"]["cpu"]["cells"]["bathtub"]["sampling10"]["euclidean"] == [1.0, 1.0]
    assert (tmp_path / "reliability_cpu.png").is_file()


def test_paired_tables_at_other_thresholds(tmp_path):
    # soft + JS misses by 0.004 and 0.015 (geodesic 0.006 and 0.0225), sampling is exact, the discrete
    # expectation misses by 0.012 (Euclidean d <= t counts, geodesic d < t)
    write_records(tmp_path, {"soft+js": [0.004, 0.015] * 3, "sampling30": [0.0] * 6, "discrete": [0.012] * 6})
    evidence.write_tables(tmp_path)
    table = (tmp_path / "table6.md").read_text()
    assert ("| sampling, Ns = 30 | +50.0 [+50.0, +50.0] / +100.0 [+100.0, +100.0] | +0.0 [+0.0, +0.0] / "
            "+50.0 [+50.0, +50.0] | +0.0 [+0.0, +0.0] / +0.0 [+0.0, +0.0] |") in table
    # @0.005 the discrete expectation is wrong everywhere, soft + JS right on half (Euclidean); @0.02 both
    # Euclidean distances count, geodesically 0.018 against 0.006 and 0.0225
    assert ("| discrete expectation | -50.0 [-50.0, -50.0] / +0.0 [+0.0, +0.0] | +0.0 [+0.0, +0.0] / "
            "+50.0 [+50.0, +50.0] |") in table
    assert ("| discrete expectation − sampling, Ns = 30 | expectation | -100.0 [-100.0, -100.0] | "
            "-100.0 [-100.0, -100.0] |") in table
    paired = json.loads((tmp_path / "evidence.json").read_text())["tables"]["cpu"]["paired_thresholds"]
    assert paired["bathtub"]["sampling30 - soft+js"]["0.005/euclidean"] == [50.0, 50.0, 50.0, 2]


@pytest.mark.parametrize("method", sorted(evidence.SAMPLING_VARIANTS))
def test_sampling_variants_train_with_their_fields(tmp_path, method):
    from pckeypoints.cli import build_parser
    from pckeypoints.config import TrainConfig, config_fields

    args = argparse.Namespace(runs=str(tmp_path), protocol="cpu-full", data_root=None, max_models=None, epochs=None,
                              device="auto")
    parsed = build_parser().parse_args(evidence.train_command(args, "bathtub", method, 0)[3:])
    config = TrainConfig.from_toml(parsed.config, **{f.name: getattr(parsed, f.name) for f in config_fields()})
    assert config.loss.num_samples == 30 and config.loss.method.startswith("sampling")
    fields = evidence.SAMPLING_VARIANTS[method]
    assert all(config.get(name) == value for name, value in fields.items())  # None: the field unset
    plain = TrainConfig.from_toml(ROOT / "experiments" / "configs" / "evidence_cpu-full.toml")
    assert any(plain.get(name) != value for name, value in fields.items())


def test_pck_curve_plot_needs_the_js_baseline(tmp_path):
    clouds = [0, 0, 1, 1]
    runs = {"bathtub": {"soft": [({}, records([0.0, 1.0] * 2, clouds))]}}
    assert evidence.plot_pck_curves("cpu", runs, ["bathtub"], ["soft"], tmp_path) is None
    runs["bathtub"]["soft+js"] = [({}, records([0.0] * 4, clouds))]
    path = evidence.plot_pck_curves("cpu", runs, ["bathtub"], ["soft", "soft+js"], tmp_path)
    assert path == tmp_path / "pck_curves_cpu.png" and path.stat().st_size > 0
