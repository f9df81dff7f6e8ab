"""What the public API takes: the head's maps in the loss, padded dense clouds, and bad input as one-line errors."""
import pytest
import torch

import pckeypoints as pk
from pckeypoints import PCKeypointsError
from pckeypoints.core.argmax import sampling_argmax


def ragged_clouds(sizes=(30, 45, 20), channels=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), 3, generator=g)
    x = torch.randn(sum(sizes), channels, generator=g)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    target = torch.rand(len(sizes), 4, 3, generator=g)
    mask = torch.rand(len(sizes), 4, generator=g) > 0.3
    return x, pos, batch, target, mask


@pytest.mark.parametrize("method", ["sampling", "soft+js", "discrete"])
def test_the_loss_takes_the_maps_dense_or_ragged(method):
    x, pos, batch, target, mask = ragged_clouds()
    torch.manual_seed(0)
    head = pk.KeypointHead(8, 4, hidden_channels=16, knn_k=4)
    loss_fn = pk.KeypointLoss(method, num_samples=6)
    maps = head(x, pos, batch)
    dense = maps.to_dense()

    def run(*args, **kwargs):
        return loss_fn(*args, tau=0.5, **kwargs)

    want = run(dense.logits, target, mask, basis=dense.basis, generator=torch.Generator().manual_seed(1))
    assert torch.equal(run(maps, target, mask, generator=torch.Generator().manual_seed(1)), want)  # ragged maps
    assert torch.equal(run(dense, target, mask=mask, generator=torch.Generator().manual_seed(1)), want)
    assert torch.equal(run(dense, target, None, generator=torch.Generator().manual_seed(1)),
                       run(dense.logits, target, basis=dense.basis, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(PCKeypointsError, match="to_dense"):  # ragged logits where dense ones belong
        run(maps.logits, target, basis=dense.basis)


@pytest.mark.parametrize("call, match", [
    (lambda loss, maps, t, m, g: loss(maps.logits, maps.basis, t, tau=0.5), "need their basis by keyword"),
    (lambda loss, maps, t, m, g: loss(maps.logits, maps.basis, t, m, tau=0.5), "positional argument"),
    (lambda loss, maps, t, m, g: loss(maps, t, m, g, tau=0.5), "positional argument"),
    (lambda loss, maps, t, m, g: loss(maps, t, g, tau=0.5), "tensors for target and mask"),
    (lambda loss, maps, t, m, g: loss(maps.logits, t, m, tau=0.5), "need their basis by keyword"),
    (lambda loss, maps, t, m, g: loss(maps, t, m, basis=maps.basis, tau=0.5), "maps carry their basis"),
    (lambda loss, maps, t, m, g: pk.sampling_argmax(maps.logits, maps.basis, 4, 0.5, g), "positional argument"),
    (lambda loss, maps, t, m, g: pk.soft_argmax(maps.logits, maps.basis, True), "positional argument"),
    (lambda loss, maps, t, m, g: maps.sample(4, 0.5, g), "positional argument"),
])
def test_the_old_type_shifted_calls_are_refused(call, match):
    """Each position has one meaning: the old ``loss(logits, basis, target, mask, generator)`` and
    ``loss(maps, target, mask, generator)`` forms are TypeErrors, never reinterpreted."""
    x, pos, batch, target, mask = ragged_clouds()
    maps = pk.KeypointHead(8, 4, hidden_channels=16, knn_k=4)(x, pos, batch).to_dense()
    with pytest.raises(TypeError, match=match):
        call(pk.KeypointLoss("sampling", num_samples=2), maps, target, mask, torch.Generator().manual_seed(0))


def test_dense_padding_with_a_mask_equals_the_unpadded_clouds():
    """Clouds padded with zeros anywhere, with mask=: the same σ, keypoints and loss as each cloud alone;
    the padding gets no probability."""
    x, pos, batch, target, kp_mask = ragged_clouds()
    torch.manual_seed(0)
    head = pk.KeypointHead(8, 4, hidden_channels=16, knn_k=4)
    n, sizes = 50, [30, 45, 20]
    dense_x, dense_pos = torch.zeros(3, n, 8), torch.zeros(3, n, 3)
    mask = torch.zeros(3, n, dtype=torch.bool)
    g = torch.Generator().manual_seed(5)
    for b, size in enumerate(sizes):
        slots = torch.randperm(n, generator=g)[:size].sort().values  # padding between the points
        mask[b, slots] = True
        dense_x[b, slots], dense_pos[b, slots] = x[batch == b], pos[batch == b]
    maps = head(dense_x, dense_pos, mask=mask)
    assert float(maps.probabilities.detach().masked_select(~mask[:, None]).abs().max()) == 0
    for b, size in enumerate(sizes):
        alone = head(x[batch == b][None], pos[batch == b][None])
        assert torch.allclose(maps.keypoints[b], alone.keypoints[0], atol=1e-6)
        assert torch.allclose(maps.basis.bandwidth[b][mask[b]], alone.basis.bandwidth[0], atol=1e-7)
    unmasked = head(dense_x, dense_pos)  # the zeros read as points move the keypoints
    assert (unmasked.keypoints - maps.keypoints).abs().max() > 1e-3
    ragged, loss_fn = head(x, pos, batch), pk.KeypointLoss("soft+js")
    assert torch.allclose(loss_fn(maps, target, kp_mask), loss_fn(ragged, target, kp_mask), atol=1e-6)


def test_an_empty_cloud_is_a_one_line_error():
    x, pos, _, target, mask = ragged_clouds((10, 12))
    batch = torch.tensor([0] * 10 + [2] * 12)  # cloud 1 has no point
    head = pk.KeypointHead(8, 4, hidden_channels=16, knn_k=4)
    with pytest.raises(PCKeypointsError, match="cloud 1"):
        head(x, pos, batch)
    head.validate = False  # unchecked input: the loss still refuses it instead of returning NaN
    maps = head(x, pos, batch)
    with pytest.raises(PCKeypointsError, match="cloud 1 .* no point"):
        pk.KeypointLoss("soft")(maps, torch.rand(3, 4, 3))
    with pytest.raises(PCKeypointsError, match="mask leaves cloud 0"):
        head.validate = True
        head(torch.zeros(2, 10, 8), torch.rand(2, 10, 3), mask=torch.arange(10).expand(2, 10) > 20)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_sigma=0), "target_sigma"), (dict(target_sigma=float("nan")), "target_sigma"),
    (dict(target_sigma=-0.1), "target_sigma"), (dict(reg_weight=-1), "reg_weight"),
    (dict(reg_weight=float("inf")), "reg_weight"),
])
def test_loss_settings_are_checked(kwargs, match):
    with pytest.raises(PCKeypointsError, match=match):
        pk.KeypointLoss("soft+js", **kwargs)


@pytest.mark.parametrize("args, match", [
    ((16, 2.5), "num_keypoints must be an integer"), ((0, 4), "in_channels must be an integer"),
    ((16, 4, {"hidden_channels": 0}), "hidden_channels"), ((16, True), "num_keypoints"),
])
def test_head_settings_are_checked(args, match):
    kwargs = args[-1] if isinstance(args[-1], dict) else {}
    with pytest.raises(PCKeypointsError, match=match):
        pk.KeypointHead(*args[:2], **kwargs)


def test_nan_features_and_mixed_dtypes_are_errors_not_nan_keypoints():
    head = pk.KeypointHead(8, 3, hidden_channels=16, knn_k=4)
    x, pos = torch.randn(2, 20, 8), torch.rand(2, 20, 3)
    x[1, 5, 2] = float("nan")
    with pytest.raises(PCKeypointsError, match="features contain NaN"):
        head(x, pos)
    basis = pk.PointBasis.from_points(pos, k=4)
    with pytest.raises(PCKeypointsError, match="float64 but the basis is torch.float32"):
        pk.KeypointLoss("soft")(torch.zeros(2, 3, 20, dtype=torch.float64), torch.rand(2, 3, 3), basis=basis)


def test_grid_heatmaps_name_the_reshape():
    basis = pk.PointBasis.grid((4, 5))
    with pytest.raises(PCKeypointsError, match=r"logits.flatten\(2\)"):
        pk.soft_argmax(torch.zeros(2, 3, 4, 5), basis)
    assert pk.soft_argmax(torch.zeros(2, 3, 4, 5).flatten(2), basis).shape == (2, 3, 2)


def test_auto_sampler_with_float16_logits_does_not_pick_the_fused_kernel():
    pos = torch.rand(2, 40, 3)
    basis = pk.PointBasis.from_points(pos, k=4)
    half = pk.PointBasis(pos.half(), basis.bandwidth.half())
    logits = torch.randn(2, 3, 40).half().requires_grad_()
    y = sampling_argmax(logits, half, 5, 0.5, generator=torch.Generator().manual_seed(0))
    y.float().sum().backward()
    assert y.dtype == torch.float16 and torch.isfinite(y).all() and torch.isfinite(logits.grad).all()
    with pytest.raises(PCKeypointsError, match="'fused' sampler takes float32 or float64"):
        sampling_argmax(logits, half, 5, 0.5, sampler="fused")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [1e-30, 1e-20])
def test_one_hot_weights_give_zero_logit_gradients_with_every_sampler(dtype, tau):
    """τ → 0: every sample is one point's, so the logits get no gradient (the fused kernel's rounding
    error must not be amplified by 1/τ)."""
    from pckeypoints.ops import fused

    pos = torch.rand(2, 100, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    basis = pk.PointBasis.from_points(pos, k=4)
    samplers = ["naive", "gaussian"] + (["fused"] if fused.available(torch.device("cpu")) else [])
    for sampler in samplers:
        logits = torch.randn(2, 4, 100, dtype=dtype, generator=torch.Generator().manual_seed(1)).requires_grad_()
        y = sampling_argmax(logits, basis, 8, tau, generator=torch.Generator().manual_seed(2), sampler=sampler)
        (grad,) = torch.autograd.grad(y.square().sum(), logits)
        assert torch.isfinite(y).all() and torch.equal(grad, torch.zeros_like(grad)), sampler
