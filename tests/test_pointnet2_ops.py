"""pointnet2.ops: C++ (and CUDA when present) kernels against the pure-PyTorch reference, gradients, bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointnet2 import _extension, build, ops, reference

CSRC = Path(ops.__file__).resolve().parent / "csrc"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_cloud(kind: str, B: int = 2, N: int = 300, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Random and adversarial clouds in [-0.5, 0.5]^3."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(B, N, 3, generator=g, dtype=dtype) - 0.5
    if kind == "duplicates":  # many exact duplicates, incl. of point 0 (FPS ties, knn ties)
        xyz[:, N // 2 :] = xyz[:, : N - N // 2]
        xyz[:, 1:6] = xyz[:, :1]
    elif kind == "clustered":  # a dense clump and sparse outliers: balls overfull and nearly empty
        xyz[:, : N // 2] *= 0.02
    elif kind == "grid":  # many equal distances
        xyz = torch.randint(-3, 4, (B, N, 3), generator=g).to(dtype) / 6
    return xyz


KINDS = ["random", "duplicates", "clustered", "grid"]


def centres_for(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """m centres: FPS points, one far away (empty ball) and one between points."""
    idx = reference.furthest_point_sample(xyz, m)
    new_xyz = xyz.gather(1, idx[..., None].expand(-1, -1, 3)).clone()
    new_xyz[:, 0] = 3.0
    new_xyz[:, 1] = 0.5 * (xyz[:, 0] + xyz[:, 1])
    return new_xyz


# ---------------------------------------------------------------- hand-computed semantics


def test_fps_hand_computed():
    xyz = torch.tensor([[[0.0, 0, 0], [10, 0, 0], [1, 0, 0], [9, 0, 0], [5, 0, 0]]])
    # 0, then farthest 10, then 5 (distance 25 to both), then 1 and 9 tie at distance 1 -> smaller index 2
    for backend in ("cpu", "reference"):
        assert ops.furthest_point_sample(xyz, 4, backend=backend).tolist() == [[0, 1, 4, 2]]
        # more samples than points: the rest repeat index 0
        assert ops.furthest_point_sample(xyz[:, :2], 4, backend=backend).tolist() == [[0, 1, 0, 0]]


def test_ball_query_hand_computed():
    xyz = torch.tensor([[[0.0, 0, 0], [5, 0, 0], [0.3, 0, 0], [0.1, 0, 0], [0.5, 0, 0]]])
    feats = torch.tensor([[[10.0, 11, 12, 13, 14]]])
    new_xyz = torch.tensor([[[0.0, 0, 0], [9, 9, 9], [0.2, 0, 0]]])
    for backend in ("cpu", "reference"):
        idx, counts = ops.ball_query(xyz, new_xyz, 0.35, 4, backend=backend)
        # first found in index order, padded with the first neighbour; the empty ball is -1
        assert idx.tolist() == [[[0, 2, 3, 0], [-1, -1, -1, -1], [0, 2, 3, 4]]]
        assert counts.tolist() == [[3, 0, 4]]
        grouped, counts = ops.ball_query_group(xyz, new_xyz, feats, 0.35, 4, backend=backend)
        assert grouped.shape == (1, 4, 3, 4)
        assert torch.allclose(grouped[0, 0, 0], torch.tensor([0.0, 0.3, 0.1, 0.0]))
        assert grouped[0, :, 1].abs().sum() == 0  # empty ball: zeros, not point 0
        assert grouped[0, 3, 2].tolist() == [10.0, 12.0, 13.0, 14.0]
        # truncation keeps the first found, not the nearest
        idx, counts = ops.ball_query(xyz, new_xyz[:, 2:], 0.35, 2, backend=backend)
        assert idx.tolist() == [[[0, 2]]] and counts.tolist() == [[2]]


def test_knn_and_interpolation_hand_computed():
    known = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 0, 0], [3, 0, 0]]])
    unknown = torch.tensor([[[1.0, 0, 0], [2, 0, 0], [0.5, 0, 0]]])
    feats = torch.tensor([[[1.0, 2, 3, 4]]])
    for backend in ("cpu", "reference"):
        dist2, idx = ops.knn(known, unknown, 3, backend=backend)
        assert idx.tolist() == [[[1, 2, 0], [1, 2, 3], [0, 1, 2]]]  # equal distances: smaller index first
        assert dist2.tolist() == [[[0, 0, 1], [1, 1, 1], [0.25, 0.25, 0.25]]]
        out = ops.three_nn_interpolate(unknown, known, feats, backend=backend)
        # at a known point the weight 1/1e-10 dominates; at equal distances the weights are equal
        assert torch.allclose(out, torch.tensor([[[2.5, 3.0, 2.0]]]), atol=1e-6)
        single = ops.three_nn_interpolate(unknown, known[:, :1], feats[:, :, :1], backend=backend)
        assert torch.equal(single, torch.ones(1, 1, 3))


# ---------------------------------------------------------------- CPU kernels == reference (exact)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_cpu_equals_reference(kind, dtype):
    xyz = make_cloud(kind, N=400, dtype=dtype)
    for m in (1, 64, 400, 450):
        assert torch.equal(
            ops.furthest_point_sample(xyz, m, backend="cpu"), ops.furthest_point_sample(xyz, m, backend="reference")
        )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("radius,nsample", [(0.05, 8), (0.2, 16), (0.3, 64), (2.0, 5)])
def test_ball_query_group_cpu_equals_reference(kind, radius, nsample):
    xyz = make_cloud(kind)
    new_xyz = centres_for(xyz, 40)
    feats = torch.randn(2, 6, xyz.shape[1], generator=torch.Generator().manual_seed(1))
    idx_c, counts_c = ops.ball_query(xyz, new_xyz, radius, nsample, backend="cpu")
    idx_r, counts_r = ops.ball_query(xyz, new_xyz, radius, nsample, backend="reference")
    assert torch.equal(idx_c, idx_r) and torch.equal(counts_c, counts_r)
    assert (counts_r[:, 0] == 0).all() and (idx_r[:, 0] == -1).all()
    for f in (feats, None):
        out_c, cnt_c = ops.ball_query_group(xyz, new_xyz, f, radius, nsample, backend="cpu")
        out_r, cnt_r = ops.ball_query_group(xyz, new_xyz, f, radius, nsample, backend="reference")
        assert out_c.shape == (2, 3 + (0 if f is None else 6), 40, nsample)
        assert torch.equal(out_c, out_r) and torch.equal(cnt_c, cnt_r)


def test_ball_query_single_point_and_overfull_slots():
    xyz = torch.tensor([[[0.1, 0.2, 0.3]]])
    new_xyz = torch.tensor([[[0.1, 0.2, 0.3], [0.1, 0.2, 0.4], [1.0, 1.0, 1.0]]])
    feats = torch.tensor([[[7.0]]])
    for backend in ("cpu", "reference"):
        out, counts = ops.ball_query_group(xyz, new_xyz, feats, 0.2, 5, backend=backend)
        assert counts.tolist() == [[1, 1, 0]]
        assert out[0, 3].tolist() == [[7.0] * 5, [7.0] * 5, [0.0] * 5]
        assert torch.allclose(out[0, 2, 1], torch.full((5,), -0.1), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 3, 16])
def test_knn_cpu_equals_reference(kind, k):
    xyz = make_cloud(kind)
    query = centres_for(xyz, 50)
    d_c, i_c = ops.knn(xyz, query, k, backend="cpu")
    d_r, i_r = ops.knn(xyz, query, k, backend="reference")
    assert torch.equal(i_c, i_r) and torch.equal(d_c, d_r)
    assert (d_c[..., 1:] >= d_c[..., :-1]).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [1, 2, 64])
def test_three_nn_interpolate_cpu_equals_reference(kind, m):
    unknown = make_cloud(kind, N=200)
    known = unknown[:, :m] if kind == "duplicates" else make_cloud(kind, N=m, seed=3)
    feats = torch.randn(2, 5, m, generator=torch.Generator().manual_seed(2))
    out_c = ops.three_nn_interpolate(unknown, known, feats, backend="cpu")
    out_r = ops.three_nn_interpolate(unknown, known, feats, backend="reference")
    assert out_c.shape == (2, 5, 200) and torch.equal(out_c, out_r)


# ---------------------------------------------------------------- gradients


def test_ball_query_group_gradcheck():
    xyz = make_cloud("clustered", B=2, N=40, dtype=torch.float64).requires_grad_()
    new_xyz = centres_for(xyz.detach(), 6).requires_grad_()
    feats = torch.randn(2, 3, 40, dtype=torch.float64, requires_grad=True)

    def grouped(xyz, new_xyz, feats):
        return ops.ball_query_group(xyz, new_xyz, feats, 0.25, 12, backend="cpu")[0]

    counts = ops.ball_query_group(xyz, new_xyz, feats, 0.25, 12, backend="cpu")[1]
    assert (counts == 0).any() and (counts < 12).any() and (counts == 12).any()  # empty, padded and full balls
    assert torch.autograd.gradcheck(grouped, (xyz, new_xyz, feats))


def test_ball_query_group_backward_matches_reference():
    xyz = make_cloud("duplicates", N=200).requires_grad_()
    new_xyz = centres_for(xyz.detach(), 30).requires_grad_()
    feats = torch.randn(2, 4, 200, requires_grad=True)
    weight = torch.randn(2, 7, 30, 16)
    grads = {}
    for backend in ("cpu", "reference"):
        out = ops.ball_query_group(xyz, new_xyz, feats, 0.2, 16, backend=backend)[0]
        grads[backend] = torch.autograd.grad((out * weight).sum(), (xyz, new_xyz, feats))
    for g_c, g_r in zip(grads["cpu"], grads["reference"]):
        assert torch.allclose(g_c, g_r, atol=1e-5)


def test_three_nn_interpolate_gradcheck():
    unknown = make_cloud("random", N=30, dtype=torch.float64)
    known = make_cloud("random", N=10, seed=4, dtype=torch.float64)
    feats = torch.randn(2, 3, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: ops.three_nn_interpolate(unknown, known, f, backend="cpu"), (feats,))
    ref = torch.autograd.grad(ops.three_nn_interpolate(unknown, known, feats, backend="reference").sum(), feats)[0]
    cpu = torch.autograd.grad(ops.three_nn_interpolate(unknown, known, feats, backend="cpu").sum(), feats)[0]
    assert torch.allclose(cpu, ref)


# ---------------------------------------------------------------- dispatcher ops and torch.compile


def test_inference_leaves_dynamo_out():
    """torch._dynamo costs ~1.2 s to import: importing pointnet2 and running an op without gradient must
    not load it (under torch.compile, use_reference decides by torch.compiler.is_compiling, without
    building). A built extension loads from its folder without the builder (cpp_extension and setuptools,
    ~0.1 s)."""
    _extension.extension(torch.device("cpu"))  # built (or loaded) here, so the child only loads it
    code = ("import sys, torch, pointnet2.ops as ops, pckeypoints\n"
            "ops.ball_query_group(torch.rand(1, 64, 3), torch.rand(1, 8, 3), None, 0.3, 4, backend='cpu')\n"
            "print(*[m in sys.modules for m in ('torch._dynamo', 'torch.utils.cpp_extension', 'setuptools')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False", "False"]


def test_extension_build_folder_follows_every_source_file_and_flag(tmp_path, monkeypatch):
    """A header edit or a new flag must give a new build folder, else a stale extension would load."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "op.cpp").write_text("#include \"op.h\"\n")
    (src / "op.h").write_text("// v1\n")
    flags = {"cxx": ["-O3"], "nvcc": []}
    first = build._build_dir("op", [str(src)], flags)
    assert first.parent == tmp_path / "cache" and first.name.startswith("op_")
    assert build._build_dir("op", [str(src)], flags) == first
    (src / "op.h").write_text("// v2\n")
    second = build._build_dir("op", [str(src)], flags)
    assert second != first
    assert build._build_dir("op", [str(src)], {"cxx": ["-O2"], "nvcc": []}) != second


def test_dispatcher_ops_pass_opcheck():
    """Schemas, fake kernels and autograd registration of torch.ops.pointnet2.* (torch.library.opcheck)."""
    from pointnet2 import _library

    xyz = make_cloud("clustered", N=60, dtype=torch.float64)
    new_xyz = centres_for(xyz, 8)
    feats = torch.randn(2, 3, 60, dtype=torch.float64)
    dist2, idx = _library.knn(xyz, new_xyz, 3)
    weight = reference.interpolation_weights(dist2)
    cases = [
        (_library.furthest_point_sample, (xyz, 8)),
        (_library.ball_query_group, (xyz.requires_grad_(), new_xyz.requires_grad_(), feats.requires_grad_(), 0.2, 6)),
        (_library.ball_query_group, (xyz, new_xyz, None, 0.2, 6)),
        (_library.knn, (xyz.detach(), new_xyz.detach(), 3)),
        (_library.interpolate, (torch.randn(2, 4, 60, dtype=torch.float64, requires_grad=True), idx, weight)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_named_tuple_results():
    xyz = make_cloud("random", N=50)
    new_xyz = xyz[:, :5]
    result = ops.knn(xyz, new_xyz, 4, backend="cpu")
    assert isinstance(result, ops.KNN) and torch.equal(result.idx[..., 0], torch.arange(5).expand(2, 5))
    ball = ops.ball_query(xyz, new_xyz, 0.3, 8, backend="cpu")
    assert isinstance(ball, ops.BallQuery) and ball.idx.shape == (2, 5, 8) and ball.counts.shape == (2, 5)
    grouped = ops.ball_query_group(xyz, new_xyz, None, 0.3, 8, backend="cpu")
    assert isinstance(grouped, ops.Grouped) and torch.equal(grouped.counts, ball.counts)


def test_validate_false_skips_only_the_value_check():
    xyz = make_cloud("random", N=20)
    nan_xyz = xyz.clone()
    nan_xyz[0, 3, 1] = float("nan")
    assert ops.furthest_point_sample(nan_xyz, 4, validate=False).shape == (2, 4)  # no data read, no sync
    with pytest.raises(ValueError, match="N=0"):
        ops.furthest_point_sample(torch.zeros(2, 0, 3), 4, validate=False)  # shapes are still checked


def test_backbone_compiles_without_graph_breaks_and_matches_eager():
    from pointnet2.modules import PointNet2Seg

    torch.manual_seed(0)
    model = PointNet2Seg(0, 16, width=0.25)
    xyz = make_cloud("random", N=600)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # traces through torch.ops.pointnet2
    out, expect = compiled(xyz), model(xyz)
    assert torch.allclose(out, expect, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    expect_grads = torch.autograd.grad(expect.square().sum(), list(model.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(grads, expect_grads))


def test_compiled_ops_follow_an_explicit_reference_backend(monkeypatch):
    """Under torch.compile the backend choice is made without building: "reference" (argument or environment)
    traces the pure-PyTorch ops, the others the dispatcher ops; the results are the same."""
    xyz = make_cloud("random", N=200)
    new_xyz = xyz[:, :16]
    want = reference.knn(xyz, new_xyz, 4)[1]
    traced, knn = [], reference.knn
    monkeypatch.setattr(reference, "knn", lambda *args: traced.append(1) or knn(*args))

    def compiled(backend):
        torch._dynamo.reset()
        return torch.compile(lambda a, b: ops.knn(a, b, 4, backend=backend).idx, fullgraph=True)(xyz, new_xyz)

    assert torch.equal(compiled("reference"), want) and len(traced) == 1
    assert torch.equal(compiled("cpu"), want) and len(traced) == 1  # the dispatcher op, not the reference
    monkeypatch.setenv(_extension.ENV_VAR, "reference")
    assert torch.equal(compiled(None), want) and len(traced) == 2


# ---------------------------------------------------------------- bad input and backend selection


def test_bad_input_raises_value_error():
    xyz = make_cloud("random", N=20)
    new_xyz = xyz[:, :5]
    feats = torch.randn(2, 3, 20)
    nan_xyz = xyz.clone()
    nan_xyz[0, 3, 1] = float("nan")
    cases = [
        (lambda: ops.furthest_point_sample(nan_xyz, 4), "NaN"),
        (lambda: ops.furthest_point_sample(torch.zeros(2, 0, 3), 4), "N=0"),
        (lambda: ops.furthest_point_sample(xyz, 0), "m must"),
        (lambda: ops.furthest_point_sample(xyz[..., :2], 4), r"\(B, N, 3\)"),
        (lambda: ops.ball_query_group(xyz, new_xyz, feats, 0.1, 0), "nsample"),
        (lambda: ops.ball_query_group(xyz, new_xyz, feats, 0.0, 4), "radius"),
        (lambda: ops.ball_query_group(xyz, new_xyz, feats, -1.0, 4), "radius"),
        (lambda: ops.ball_query_group(xyz, new_xyz, feats[:, :, :10], 0.1, 4), "features"),
        (lambda: ops.ball_query_group(xyz, new_xyz[:1], feats, 0.1, 4), "batch size"),
        (lambda: ops.ball_query_group(xyz, new_xyz.double(), feats, 0.1, 4), "must match"),
        (lambda: ops.ball_query(xyz, nan_xyz, 0.1, 4), "NaN"),
        (lambda: ops.knn(xyz, new_xyz, 21), "exceeds"),
        (lambda: ops.three_nn_interpolate(new_xyz, xyz, feats[:, :, :5]), "known_feats"),
        (lambda: ops.knn(xyz, new_xyz, 3, backend="gpu"), "backend"),
        (lambda: ops.knn(xyz, new_xyz, 3, backend="cuda"), "cuda tensors"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_backend_from_environment(monkeypatch):
    xyz = make_cloud("random", N=20)
    monkeypatch.setenv(_extension.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="backend"):
        ops.furthest_point_sample(xyz, 4)
    monkeypatch.setenv(_extension.ENV_VAR, "reference")
    assert _extension.resolve(None, xyz.device) is None


def test_failed_build_falls_back_to_reference_with_one_warning(monkeypatch):
    def broken_build(device_type):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(_extension, "_build", broken_build)
    _extension._build_or_warn.cache_clear()
    try:
        xyz = make_cloud("random", N=50)
        with pytest.warns(RuntimeWarning, match="falling back") as record:
            for _ in range(3):
                out = ops.furthest_point_sample(xyz, 8, backend="auto")
        assert len(record) == 1
        assert torch.equal(out, reference.furthest_point_sample(xyz, 8))
        with pytest.raises(RuntimeError, match="no compiler"):  # an explicit backend does not fall back
            ops.furthest_point_sample(xyz, 8, backend="cpu")
    finally:
        _extension._build_or_warn.cache_clear()


# ---------------------------------------------------------------- CUDA


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
def test_cuda_kernels_compile_with_nvcc(tmp_path):
    cmd = ["nvcc", "-c", "-std=c++17", "-O3", "-gencode", "arch=compute_90,code=sm_90",
           str(CSRC / "pointnet2_kernels.cu"), "-o", str(tmp_path / "kernels.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.o").stat().st_size > 0


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_equals_reference(kind, dtype):
    xyz = make_cloud(kind, B=3, N=3000, dtype=dtype)  # N > FPS block size: strided loop + reduction
    new_xyz = centres_for(xyz, 100)
    feats = torch.randn(3, 5, 3000, dtype=dtype)
    cuda = lambda t: t.cuda()  # noqa: E731
    fps = ops.furthest_point_sample(cuda(xyz), 256, backend="cuda")
    assert torch.equal(fps.cpu(), reference.furthest_point_sample(xyz, 256))
    for radius, nsample in [(0.05, 8), (0.2, 32), (2.0, 4)]:
        out, counts = ops.ball_query_group(cuda(xyz), cuda(new_xyz), cuda(feats), radius, nsample, backend="cuda")
        out_r, counts_r = reference.ball_query_group(xyz, new_xyz, feats, radius, nsample)
        assert torch.equal(out.cpu(), out_r) and torch.equal(counts.cpu(), counts_r)
        idx, _ = ops.ball_query(cuda(xyz), cuda(new_xyz), radius, nsample, backend="cuda")
        assert torch.equal(idx.cpu(), reference.ball_query(xyz, new_xyz, radius, nsample)[0])
    d, i = ops.knn(cuda(xyz), cuda(new_xyz), 16, backend="cuda")
    d_r, i_r = reference.knn(xyz, new_xyz, 16)
    assert torch.equal(i.cpu(), i_r) and torch.equal(d.cpu(), d_r)
    interp = ops.three_nn_interpolate(cuda(xyz), cuda(new_xyz), cuda(feats[:, :, :100]), backend="cuda")
    assert torch.equal(interp.cpu(), reference.three_nn_interpolate(xyz, new_xyz, feats[:, :, :100]))


@requires_cuda
def test_cuda_large_cloud_equals_cpu():
    xyz = make_cloud("random", B=2, N=16384)
    new_xyz = xyz.gather(1, ops.furthest_point_sample(xyz, 512, backend="cpu")[..., None].expand(-1, -1, 3))
    feats = torch.randn(2, 8, 16384)
    out_c, counts_c = ops.ball_query_group(xyz, new_xyz, feats, 0.1, 32, backend="cpu")
    out_g, counts_g = ops.ball_query_group(xyz.cuda(), new_xyz.cuda(), feats.cuda(), 0.1, 32, backend="cuda")
    assert torch.equal(out_g.cpu(), out_c) and torch.equal(counts_g.cpu(), counts_c)
    assert torch.equal(ops.furthest_point_sample(xyz.cuda(), 512, backend="cuda").cpu(),
                       ops.furthest_point_sample(xyz, 512, backend="cpu"))


@requires_cuda
def test_cuda_gradcheck():
    xyz = make_cloud("clustered", B=2, N=40, dtype=torch.float64).cuda().requires_grad_()
    new_xyz = centres_for(xyz.detach().cpu(), 6).cuda().requires_grad_()
    feats = torch.randn(2, 3, 40, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, f: ops.ball_query_group(a, b, f, 0.25, 12, backend="cuda")[0],
        (xyz, new_xyz, feats), nondet_tol=1e-12,
    )
    known = make_cloud("random", N=10, seed=4, dtype=torch.float64).cuda()
    kfeats = torch.randn(2, 3, 10, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda f: ops.three_nn_interpolate(xyz.detach(), known, f, backend="cuda"), (kfeats,), nondet_tol=1e-12
    )
