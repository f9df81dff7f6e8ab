"""Bad arguments to the public functions of pckeypoints and pointnet2 raise one-line InputErrors.

pckeypoints' functions raise :class:`pckeypoints.errors.InputError`; pointnet2's ops and modules their own
``pointnet2.errors.InputError``, which is :data:`pckeypoints.errors.AnyInputError`, the base of both.
"""
from __future__ import annotations

import pytest
import torch

import pckeypoints as pk
import pointnet2
from pckeypoints.errors import AnyInputError, InputError
from pointnet2.pyg import RaggedPointNet2

NAN_CLOUD = torch.rand(2, 16, 3).index_put_((torch.tensor([1]), torch.tensor([3]), torch.tensor([0])),
                                            torch.tensor(float("nan")))
EMPTY_CLOUD = torch.rand(2, 0, 3)
FLAT_CLOUD = torch.rand(16, 3)  # no batch axis
INT_CLOUD = torch.randint(0, 5, (2, 16, 3))


def basis():
    return pk.PointBasis.from_points(torch.rand(2, 16, 3), k=4)


def maps():
    return pk.KeypointReadout(knn_k=4)(torch.randn(2, 3, 16), torch.rand(2, 16, 3))


PCKEYPOINTS_CALLS = {
    "ConstantTau: tau 0": lambda: pk.ConstantTau(0.0),
    "LinearTau: negative end": lambda: pk.LinearTau(1.0, -0.1, 10),
    "CosineTau: 0 epochs": lambda: pk.CosineTau(1.0, 0.1, 0),
    "ExponentialTau: start 0": lambda: pk.ExponentialTau(0.0, 0.1, 10),
    "make_schedule: unknown": lambda: pk.make_schedule("step", 1.0),
    "KeypointHead: 0 keypoints": lambda: pk.KeypointHead(8, 0),
    "KeypointHead: NaN cloud": lambda: pk.KeypointHead(3, 2, knn_k=4)(NAN_CLOUD, NAN_CLOUD),
    "KeypointHead: wrong features": lambda: pk.KeypointHead(8, 2, knn_k=4)(torch.rand(2, 16, 5), torch.rand(2, 16, 3)),
    "KeypointHead: flat cloud": lambda: pk.KeypointHead(3, 2, knn_k=4)(FLAT_CLOUD, FLAT_CLOUD),
    "KeypointReadout: knn_k 0": lambda: pk.KeypointReadout(knn_k=0),
    "KeypointReadout: empty cloud": lambda: pk.KeypointReadout(knn_k=4)(torch.zeros(2, 3, 0), EMPTY_CLOUD),
    "KeypointLoss: method": lambda: pk.KeypointLoss("argmax"),
    "KeypointLoss: target shape": lambda: pk.KeypointLoss("soft")(maps(), torch.rand(2, 3)),
    "KeypointLoss: NaN logits": lambda: pk.KeypointLoss("soft")(torch.full((2, 3, 16), float("nan")),
                                                               torch.rand(2, 3, 3), basis=basis()),
    "KeypointLoss: float64 logits": lambda: pk.KeypointLoss("soft")(torch.zeros(2, 3, 16, dtype=torch.float64),
                                                                   torch.rand(2, 3, 3), basis=basis()),
    "KeypointMaps.sample: tau 0": lambda: maps().sample(4, 0.0),
    "PointBasis: NaN cloud": lambda: pk.PointBasis(NAN_CLOUD, 0.1),
    "PointBasis.from_points: empty cloud": lambda: pk.PointBasis.from_points(EMPTY_CLOUD, k=4),
    "PointBasis.from_points: integer cloud": lambda: pk.PointBasis.from_points(INT_CLOUD, k=4),
    "check_cloud: NaN": lambda: pk.check_cloud(NAN_CLOUD, batched=True),
    "check_cloud: empty": lambda: pk.check_cloud(EMPTY_CLOUD, batched=True),
    "check_cloud: flat": lambda: pk.check_cloud(FLAT_CLOUD, batched=True),
    "sampling_argmax: tau 0": lambda: pk.sampling_argmax(torch.zeros(2, 3, 16), basis(), 4, 0.0),
    "sampling_argmax: integer logits": lambda: pk.sampling_argmax(torch.zeros(2, 3, 16, dtype=torch.long), basis(), 4,
                                                                  0.5),
    "soft_argmax: logits shape": lambda: pk.soft_argmax(torch.zeros(2, 3, 15), basis()),
    "knn_points: k > N": lambda: pk.knn_points(torch.rand(1, 5, 3), torch.rand(1, 5, 3), 10),
    "knn_points: NaN": lambda: pk.knn_points(NAN_CLOUD, NAN_CLOUD, 2),
    "fps: ratio": lambda: pk.fps(torch.rand(16, 3), ratio=2.0),
    "fps: integer cloud": lambda: pk.fps(INT_CLOUD[0]),
    "radius: r 0": lambda: pk.radius(torch.rand(16, 3), torch.rand(4, 3), 0.0),
    "radius_graph: NaN r": lambda: pk.radius_graph(torch.rand(16, 3), float("nan")),
    "knn_graph: k 0": lambda: pk.knn_graph(torch.rand(16, 3), 0),
    "knn_graph: batched cloud": lambda: pk.knn_graph(torch.rand(2, 16, 3), 4),
    "knn_interpolate: features shape": lambda: pk.knn_interpolate(torch.rand(5, 4), torch.rand(16, 3),
                                                                  torch.rand(4, 3)),
    "pck: shapes": lambda: pk.pck(torch.rand(2, 3, 3), torch.rand(2, 4, 3), torch.ones(2, 4, dtype=torch.bool), [0.1]),
    "pck_curve: mask dtype": lambda: pk.pck_curve(torch.rand(2, 3, 3), torch.rand(2, 3, 3), torch.ones(2, 3), [0.1]),
    "mean_error: NaN prediction": lambda: pk.mean_error(torch.full((2, 3, 3), float("nan")), torch.rand(2, 3, 3),
                                                        torch.ones(2, 3, dtype=torch.bool)),
    "geodesic_pck: index shape": lambda: pk.geodesic_pck(torch.rand(1, 2, 3), torch.rand(1, 16, 3),
                                                         torch.zeros(1, 3, dtype=torch.long),
                                                         torch.ones(1, 2, dtype=torch.bool), [0.1]),
    "dual_alignment_score: no shapes": lambda: pk.dual_alignment_score(torch.rand(0, 3, 3), []),
    "keypoint_miou: thresholds": lambda: pk.keypoint_miou(torch.rand(1, 2, 3), [torch.rand(2, 3)], None, [-1.0]),
    "calibration_correlation: lengths": lambda: pk.calibration_correlation(torch.rand(5), torch.ones(4, dtype=torch.bool)),
    "KeypointDetector: NaN cloud": lambda: pk.KeypointDetector(3, width=0.25, hidden_channels=8)(NAN_CLOUD),
    "KeypointDetector: empty cloud": lambda: pk.KeypointDetector(3, width=0.25, hidden_channels=8)(EMPTY_CLOUD),
    "KeypointDetector: flat cloud": lambda: pk.KeypointDetector(3, width=0.25, hidden_channels=8)(FLAT_CLOUD),
    "SkeletonAutoencoder: NaN cloud": lambda: pk.SkeletonAutoencoder(3, width=0.25)(NAN_CLOUD),
    "collate_keypoints: no items": lambda: pk.collate_keypoints([]),
}

POINTNET2_CALLS = {
    "furthest_point_sample: NaN": lambda: pointnet2.furthest_point_sample(NAN_CLOUD, 4),
    "furthest_point_sample: empty": lambda: pointnet2.furthest_point_sample(EMPTY_CLOUD, 4),
    "furthest_point_sample: integer cloud": lambda: pointnet2.furthest_point_sample(INT_CLOUD, 4),
    "ball_query: flat centres": lambda: pointnet2.ball_query(torch.rand(2, 16, 3), FLAT_CLOUD, 0.2, 4),
    "ball_query_group: radius": lambda: pointnet2.ball_query_group(torch.rand(2, 16, 3), torch.rand(2, 4, 3), None,
                                                                   -1.0, 4),
    "knn: k > N": lambda: pointnet2.knn(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 8),
    "three_nn_interpolate: features": lambda: pointnet2.three_nn_interpolate(torch.rand(2, 16, 3), torch.rand(2, 4, 3),
                                                                             torch.rand(2, 5, 3)),
    "SetAbstraction: scales": lambda: pointnet2.SetAbstraction(4, [0.1, 0.2], [4], 0, [[8]]),
    "PointNet2Seg: settings": lambda: pointnet2.PointNet2Seg(0, 0),
    "PointNet2Seg: unexpected features": lambda: pointnet2.PointNet2Seg(0, 8, width=0.25)(torch.rand(2, 16, 3),
                                                                                          torch.rand(2, 16, 4)),
    "RaggedPointNet2: unsorted batch": lambda: RaggedPointNet2(pointnet2.PointNet2Seg(0, 8, width=0.25))(
        None, torch.rand(4, 3), torch.tensor([1, 0, 1, 0])),
}


@pytest.mark.parametrize("name", sorted(PCKEYPOINTS_CALLS))
def test_pckeypoints_bad_arguments_raise_input_errors(name):
    with pytest.raises(InputError) as info:
        PCKEYPOINTS_CALLS[name]()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(POINTNET2_CALLS))
def test_pointnet2_bad_arguments_raise_its_input_error_the_common_base(name):
    with pytest.raises(pointnet2.errors.InputError) as info:
        POINTNET2_CALLS[name]()
    assert isinstance(info.value, AnyInputError) and "\n" not in str(info.value)


def test_the_common_base_catches_both_packages():
    assert AnyInputError is pointnet2.errors.InputError and issubclass(InputError, AnyInputError)
    assert issubclass(InputError, pk.PCKeypointsError) and issubclass(AnyInputError, ValueError)
