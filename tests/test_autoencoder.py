import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from keypointnet_subset import make_subset
from pckeypoints.core.argmax import sampling_argmax
from pckeypoints.core.basis import PointBasis
from pckeypoints.ops.chamfer import composite_chamfer_distance
from pckeypoints.models.autoencoder import SkeletonAutoencoder, SkeletonDecoder, keypoint_pairs, skeleton_loss

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/keypointnet"
needs_data = pytest.mark.skipif(not (DATA / "annotations" / "bed.json").is_file(), reason="KeypointNet not available")


def test_decoder_places_points_on_segments():
    decoder = SkeletonDecoder(4, points_per_edge=5)
    with torch.no_grad():
        decoder.offsets.zero_()
    keypoints = torch.randn(2, 4, 3)
    parts = decoder(keypoints)
    assert parts.shape == (2, 6, 5, 3)
    for p, (i, j) in enumerate(keypoint_pairs(4).tolist()):
        assert i < j
        for m, t in enumerate(torch.linspace(0, 1, 5)):
            torch.testing.assert_close(parts[:, p, m], keypoints[:, i] + t * (keypoints[:, j] - keypoints[:, i]))
    with pytest.raises(ValueError, match="K=4"):
        decoder(torch.randn(2, 5, 3))


def test_decoder_gradients_reach_keypoints():
    g = torch.Generator().manual_seed(0)
    decoder = SkeletonDecoder(3, points_per_edge=4).double()
    points = torch.randn(1, 10, 3, generator=g, dtype=torch.float64)
    activations = torch.tensor([[0.7, 0.4, 0.5]], dtype=torch.float64)
    keypoints = torch.randn(1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def loss(keypoints):
        d = composite_chamfer_distance(points, decoder(keypoints), activations)
        return d.reconstruction_to_input + d.input_to_reconstruction

    assert torch.autograd.gradcheck(loss, (keypoints,))
    loss(keypoints).sum().backward()
    assert keypoints.grad.abs().sum() > 0


def test_gradients_flow_through_sampling_argmax_to_logits():
    g = torch.Generator().manual_seed(1)
    cloud = torch.randn(1, 12, 3, generator=g, dtype=torch.float64)
    basis = PointBasis(cloud, 0.05)
    decoder = SkeletonDecoder(3, points_per_edge=4).double()
    activations = torch.tensor([[0.6, 0.5, 0.4]], dtype=torch.float64)
    logits = torch.randn(1, 3, 12, generator=g, dtype=torch.float64, requires_grad=True)

    def loss(logits):
        sampler = torch.Generator().manual_seed(7)  # the same Gumbel and Gaussian draws at every evaluation
        samples = sampling_argmax(logits, basis, num_samples=2, tau=0.5, generator=sampler)  # (1, K, Ns, 3)
        parts = decoder(samples.transpose(1, 2)).flatten(0, 1)  # one skeleton per sample
        d = composite_chamfer_distance(cloud.expand(2, -1, -1), parts, activations.expand(2, -1))
        return (d.reconstruction_to_input + d.input_to_reconstruction).mean()

    assert torch.autograd.gradcheck(loss, (logits,))
    loss(logits).backward()
    assert logits.grad.abs().sum() > 0


def test_model_outputs_and_sampling_shapes():
    torch.manual_seed(0)
    model = SkeletonAutoencoder(4, width=0.25, feature_channels=16, hidden_channels=16, points_per_edge=8, fixed_sigma=0.05,
                                radius_scale=2.0)
    points = torch.nn.functional.normalize(torch.randn(2, 256, 3), dim=-1)
    soft = model(points)
    assert soft.activations.shape == (2, 6) and ((soft.activations > 0) & (soft.activations < 1)).all()
    assert soft.decoded.shape == (2, 1, 4, 3) and soft.parts.shape == (2, 1, 6, 8, 3)
    torch.testing.assert_close(soft.decoded[:, 0], soft.keypoints)
    sampled = soft.sample(5, tau=0.5)
    assert sampled.decoded.shape == (2, 5, 4, 3) and sampled.parts.shape == (2, 5, 6, 8, 3)
    loss = skeleton_loss(points, sampled)
    (loss.reconstruction_to_input.mean() + loss.input_to_reconstruction.mean()).backward()
    for name in ("head.mlp.0.weight", "encoder.head.weight", "activation_mlp.0.weight", "decoder.offsets"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 256, 3), float("nan")))


def test_skeleton_loss_averages_over_samples():
    torch.manual_seed(0)
    model = SkeletonAutoencoder(3, width=0.25, feature_channels=8, hidden_channels=8, points_per_edge=4, fixed_sigma=0.05)
    points = torch.nn.functional.normalize(torch.randn(2, 128, 3), dim=-1) * 0.5
    out = model(points).sample(3, tau=1.0)
    loss = skeleton_loss(points, out, uncovered_penalty=5.0)
    per_sample = [composite_chamfer_distance(points, out.parts[:, s], out.activations, 5.0) for s in range(3)]
    torch.testing.assert_close(loss.reconstruction_to_input, sum(p.reconstruction_to_input for p in per_sample) / 3)
    torch.testing.assert_close(loss.input_to_reconstruction, sum(p.input_to_reconstruction for p in per_sample) / 3)


def _tiny_config(tmp_path, **changes):
    from pckeypoints.train.training import TrainConfig

    values = dict(mode="unsupervised", category="bed", method="sampling", num_samples=2, num_keypoints=4, width=0.25,
                  hidden_channels=16, basis="fixed", sigma=0.05, epochs=2, batch_size=2, lr=3e-3, lr_schedule="constant",
                  max_models=4, data_root=str(DATA), out=str(tmp_path), name="tiny", tau_start=1.0, tau_end=0.5)
    values.update(changes)
    return TrainConfig.from_fields(**values)


@needs_data
def test_tiny_training_run_decreases_reconstruction_loss(tmp_path):
    from pckeypoints.train.training import train

    torch.set_num_threads(1)
    run = train(_tiny_config(tmp_path), progress=False)
    with open(run / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    losses = [float(r["input_to_reconstruction"]) + float(r["reconstruction_to_input"]) for r in rows]
    assert len(losses) == 2 and losses[1] < losses[0]
    # best.pt is selected without labels: the epoch of the highest val neg_reconstruction
    with open(run / "log.csv") as f:
        monitored = [float(r["neg_reconstruction"]) for r in csv.DictReader(f) if r["split"] == "val"]
    best = torch.load(run / "best.pt", weights_only=False)
    assert best["best"] == max(monitored) and best["epoch"] == 1 + monitored.index(max(monitored))
    assert (run / "last.pt").is_file()


@needs_data
def test_evaluate_computes_das_in_dataset_coordinates(tmp_path):
    from pckeypoints.data import KeypointNet, collate_keypoints
    from pckeypoints.metrics import dual_alignment_score
    from pckeypoints.train.tasks import get_task

    task = get_task("unsupervised")
    config = _tiny_config(tmp_path, max_models=5)
    dataset = task.dataset(config, "test", train=False)
    config = task.configure(config, dataset)
    torch.manual_seed(0)
    model = task.build_model(config).eval()
    loader = DataLoader(dataset, 2, collate_fn=collate_keypoints)
    metrics = task.evaluate(model, loader, config)
    assert set(metrics.to_dict()) == {"neg_reconstruction", "das", "das_forward", "das_backward", "miou@0.1"}
    assert metrics.das_sm is None and metrics.das_sm_shapes is None  # a report's only
    assert metrics.das.das == pytest.approx((metrics.das.forward + metrics.das.backward) / 2)
    assert all(0 <= v <= 1 for v in (metrics.das.das, metrics.das.forward, metrics.das.backward, metrics.miou))
    soft = config.replace(method="soft")
    with torch.no_grad():  # the monitor is the mean training objective of the soft-argmax skeletons, no labels
        losses = [task.loss(model, batch, soft, tau=1.0)[0] * len(batch["points"]) for batch in loader]
    assert metrics.monitored == -metrics.reconstruction == pytest.approx(-sum(losses).item() / len(dataset), rel=1e-5)

    # Same score by hand: the model's keypoints mapped back with each item's center and scale, scored
    # against the raw (unnormalised) annotations.
    raw = KeypointNet(DATA, "bed", "test")
    pred, annotations = [], []
    with torch.no_grad():
        for i in range(5):
            item = dataset[i]
            pred.append(model(item["points"][None]).keypoints[0] * item["scale"] + item["center"])
            mask = raw[i]["mask"]
            annotations.append((raw[i]["keypoints"][mask], mask.nonzero().squeeze(-1)))
    expected = dual_alignment_score(torch.stack(pred), annotations)
    assert metrics.das.das == pytest.approx(expected.das, abs=1e-6)
    assert not math.isnan(metrics.miou)


def test_bad_settings_are_rejected(tmp_path):
    from pckeypoints.errors import ConfigError
    from pckeypoints.train.tasks import get_task

    task = get_task("unsupervised")
    with pytest.raises(ConfigError, match="method"):
        _tiny_config(tmp_path, method="soft+var")
    with pytest.raises(ConfigError, match="ofset"):
        _tiny_config(tmp_path, ofset=1.0)
    assert task.configure(_tiny_config(tmp_path, num_keypoints=None), None).model.num_keypoints == 10


def test_report_scores_every_annotated_shape_with_self_pairs(tmp_path):
    from pckeypoints.data import KeypointNet, collate_keypoints
    from pckeypoints.metrics import dual_alignment_score
    from pckeypoints.train.tasks import get_task

    root = make_subset(tmp_path / "data", "bed", {"train": 3, "val": 2, "test": 2})
    task = get_task("unsupervised")
    config = _tiny_config(tmp_path, data_root=str(root), max_models=None)
    dataset = task.dataset(config, "test", train=False)
    config = task.configure(config, dataset)
    torch.manual_seed(0)
    model = task.build_model(config).eval()
    metrics = task.report(model, DataLoader(dataset, 2, collate_fn=collate_keypoints), config, tmp_path / "report")
    assert metrics.das_sm_shapes == 7
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"] == metrics.to_dict()

    every = task.dataset(config, None, train=False)  # all 7 annotated models, normalised
    raw = KeypointNet(root, "bed")
    pred, annotations = [], []
    with torch.no_grad():
        for i in range(len(every)):
            item = every[i]
            pred.append(model(item["points"][None]).keypoints[0] * item["scale"] + item["center"])
            mask = raw[i]["mask"]
            annotations.append((raw[i]["keypoints"][mask], mask.nonzero().squeeze(-1)))
    expected = dual_alignment_score(torch.stack(pred), annotations, self_pairs=True)
    assert metrics.das_sm.das == pytest.approx(expected.das, abs=1e-6)
    assert metrics.das_sm.forward == pytest.approx(expected.forward, abs=1e-6)
    assert metrics.das_sm.backward == pytest.approx(expected.backward, abs=1e-6)

    # the strict DAS and the mIoU of the test split, computed directly (the report derives every score from the
    # per-shape counts of records.pt, which table7.py's bootstrap resamples)
    from pckeypoints.evaluation.inference import collect_predictions
    from pckeypoints.metrics import keypoint_miou
    from pckeypoints.train.unsupervised import GEODESIC_K, _annotations

    collected = collect_predictions(model, DataLoader(dataset, 2, collate_fn=collate_keypoints))
    test_annotations = _annotations(collected)
    strict = dual_alignment_score(collected["pred"], test_annotations)
    assert (metrics.das.das, metrics.das.forward, metrics.das.backward) == pytest.approx(
        (strict.das, strict.forward, strict.backward), abs=1e-6)
    miou = keypoint_miou(collected["pred"], [xyz for xyz, _ in test_annotations], collected["points"], 0.1,
                         k=GEODESIC_K)
    assert metrics.miou == pytest.approx(float(miou[0]), abs=1e-6)
    records = torch.load(tmp_path / "report" / "records.pt")
    assert len(records["model_id"]) == 2 and len(records["das_sm_model_id"]) == 7
    assert float(records["reconstruction"].mean()) == pytest.approx(metrics.reconstruction, rel=1e-6)
