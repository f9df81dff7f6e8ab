import pytest
import torch

from pckeypoints.core.argmax import soft_argmax
from pckeypoints.core.basis import PointBasis
from pckeypoints.core.losses import (
    KeypointLoss,
    discrete_expectation,
    distance,
    error_of_expectation,
    expectation_of_error,
    js_regularization,
    masked_mean,
    variance_regularization,
)

D = torch.float64


def problem(seed=0, b=2, k=3, n=8):
    g = torch.Generator().manual_seed(seed)
    basis = PointBasis.from_points(torch.rand(b, n, 3, dtype=D, generator=g), k=3)
    logits = torch.randn(b, k, n, dtype=D, generator=g, requires_grad=True)
    target = torch.rand(b, k, 3, dtype=D, generator=g)
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[1, 0] = False
    return logits, basis, target, mask


def test_distances_and_masked_mean_by_hand():
    a, b = torch.tensor([[1.0, 2.0, 2.0]]), torch.zeros(1, 3)
    assert distance(a, b, "l1").item() == 5.0 and distance(a, b, "l2").item() == 3.0
    v = torch.tensor([[1.0, 2.0], [3.0, 40.0]])
    assert masked_mean(v, torch.tensor([[True, True], [True, False]])).item() == 2.0
    assert masked_mean(v, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0


def test_discrete_expectation_by_hand():
    basis = PointBasis.grid((3,), kind="uniform")  # points 0, 1, 2
    logits = torch.log(torch.tensor([[[0.2, 0.5, 0.3]]]))
    target = torch.tensor([[[0.5]]])
    # 0.2 * 0.5 + 0.5 * 0.5 + 0.3 * 1.5
    assert torch.isclose(discrete_expectation(logits, basis, target), torch.tensor(0.8))


def test_variance_regularization_by_hand():
    basis = PointBasis.grid((3,), kind="uniform")
    logits = torch.log(torch.tensor([[[0.25, 0.5, 0.25]]]))
    # Var = 0.25 + 0.25 = 0.5 -> (0.5 - 0.1)^2
    assert torch.isclose(variance_regularization(logits, basis, 0.1), torch.tensor(0.16))


def test_js_is_zero_for_the_target_gaussian_and_log2_for_disjoint_maps():
    basis = PointBasis.grid((50,), spacing=0.1)
    target = torch.tensor([[[2.5]]])
    gauss = -(basis.pos[0, :, 0] - 2.5).square() / (2 * 0.3**2)
    assert js_regularization(gauss.view(1, 1, -1), basis, target, 0.3).abs().item() < 1e-6
    far = torch.full((1, 1, 50), -1e4)
    far[0, 0, 0] = 0  # all mass at 0.0, target Gaussian at 2.5 with σ = 0.01
    assert torch.isclose(js_regularization(far, basis, target, 0.01), torch.tensor(0.6931472), atol=1e-5)


def test_expectation_of_error_by_hand():
    samples = torch.tensor([[[[0.0, 0.0], [2.0, 0.0]]]])  # (1, 1, 2, 2)
    target = torch.tensor([[[1.0, 1.0]]])
    assert expectation_of_error(samples, target).item() == 2.0  # both samples at L1 distance 2
    assert torch.isclose(expectation_of_error(samples, target, metric="l2"), torch.tensor(2**0.5))


@pytest.mark.parametrize(
    "loss",
    [
        lambda l, b, t, m: error_of_expectation(soft_argmax(l, b), t, m),
        lambda l, b, t, m: error_of_expectation(soft_argmax(l, b), t, m, metric="l2"),
        lambda l, b, t, m: discrete_expectation(l, b, t, m),
        lambda l, b, t, m: variance_regularization(l, b, 0.01, m),
        lambda l, b, t, m: js_regularization(l, b, t, 0.2, m),
        lambda l, b, t, m: KeypointLoss("soft+var", reg_weight=3.0)(l, t, m, basis=b),
        lambda l, b, t, m: KeypointLoss("soft+js")(l, t, m, basis=b),
        lambda l, b, t, m: KeypointLoss("sampling", num_samples=4)(l, t, m, basis=b, generator=torch.Generator().manual_seed(0),
                                                                  tau=0.5),
        lambda l, b, t, m: KeypointLoss("sampling", metric="l2", num_samples=4, sampler="naive")(
            l, t, m, basis=b, generator=torch.Generator().manual_seed(0), tau=0.5),
    ],
)
def test_loss_gradients_pass_gradcheck(loss):
    logits, basis, target, mask = problem()
    assert torch.autograd.gradcheck(lambda l: loss(l, basis, target, mask), (logits,))


def test_expectation_of_error_gradcheck_in_samples():
    g = torch.Generator().manual_seed(1)
    samples = torch.randn(2, 3, 5, 3, dtype=D, generator=g, requires_grad=True)
    target = torch.randn(2, 3, 3, dtype=D, generator=g)
    assert torch.autograd.gradcheck(lambda s: expectation_of_error(s, target, metric="l2"), (samples,))


@pytest.mark.parametrize("method", ["soft", "soft+var", "soft+js", "discrete", "sampling"])
def test_missing_keypoints_do_not_count(method):
    logits, basis, target, mask = problem(2)
    loss = KeypointLoss(method, num_samples=3)
    run = lambda t: loss(logits, t, mask, basis=basis, generator=torch.Generator().manual_seed(0), tau=1.0)
    base = run(target)
    moved = target.clone()
    moved[1, 0] = float("nan")  # a missing keypoint may even hold NaN
    assert torch.equal(run(moved), base)
    base.backward()
    assert logits.grad[1, 0].abs().max() == 0 and logits.grad[0, 0].abs().max() > 0


def test_bad_targets_raise():
    logits, basis, target, mask = problem()
    with pytest.raises(ValueError, match="NaN"):
        error_of_expectation(soft_argmax(logits, basis), torch.full_like(target, float("nan")), mask)
    with pytest.raises(ValueError, match="target must be"):
        discrete_expectation(logits, basis, target[:, :2], mask)
    with pytest.raises(ValueError, match="method"):
        KeypointLoss("argmax")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t, m: (t, m.long()), r"mask must be bool \(2, 3\).*torch.int64"),
        (lambda t, m: (t, m[:, :2]), r"mask must be bool \(2, 3\).*\(2, 2\)"),
        (lambda t, m: (t[:, :, 0], m), r"target must be \(B, K=3, 3\) keypoints, got shape \(2, 3\)"),
        (lambda t, m: (t[:, :, :2], m), r"target must be \(B, K=3, 3\)"),
        (lambda t, m: (t[:1], m[:1]), "batch size"),
    ],
)
def test_keypoint_loss_names_bad_masks_and_targets(change, match):
    logits, basis, target, mask = problem()
    target, mask = change(target, mask)
    for method in ("soft", "sampling"):
        with pytest.raises(ValueError, match=match):
            KeypointLoss(method, num_samples=2)(logits, target, mask, basis=basis, tau=1.0)


def test_tau_is_a_call_argument():
    logits, basis, target, mask = problem()
    loss = KeypointLoss("sampling", num_samples=4)
    with pytest.raises(ValueError, match="tau=schedule.value"):
        loss(logits, target, mask, basis=basis)
    with pytest.raises(ValueError, match="num_samples"):
        KeypointLoss("sampling", num_samples=2.5)


@pytest.mark.parametrize("method", ["soft+js", "sampling"])
def test_with_validate_false_a_training_step_runs_no_value_check(monkeypatch, method):
    from pckeypoints import validation
    from pckeypoints.models import KeypointDetector

    def forbidden(*args, **kwargs):
        raise AssertionError("a value check ran")

    for module in ("pckeypoints.validation", "pckeypoints.core.basis", "pckeypoints.core.losses"):
        monkeypatch.setattr(f"{module}.check_finite", forbidden)
    torch.manual_seed(0)
    model = KeypointDetector(3, width=0.25, hidden_channels=16, validate=False)
    loss_fn = KeypointLoss(method, num_samples=2, validate=False)
    maps = model(torch.rand(2, 64, 3))
    loss_fn(maps, torch.rand(2, 3, 3), torch.ones(2, 3, dtype=torch.bool), tau=1.0).backward()
    with pytest.raises(AssertionError, match="a value check ran"):  # the default validates, once per call
        KeypointDetector(3, width=0.25, hidden_channels=16)(torch.rand(2, 64, 3))
