"""Visualisation: colours, camera projection, Open3D renders of a real bathtub, matplotlib plots."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viz import (PALETTE, look_at_bbox, plot_calibration, plot_pck_curves, plot_training_curves, probability_colors,
                 render_gallery, render_image, render_keypoints, semantic_colors)
from viz.offscreen import offscreen_status
from viz.plots import DPI, FIGSIZE, panel_figure, save_figure
from viz.render import LEGEND_WIDTH

DATA = Path(os.environ.get("PCKP_DATA") or Path(__file__).resolve().parents[1].parent / "shared/data/keypointnet")
WIDTH, HEIGHT = 480, 360
PLOT_SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


@pytest.fixture(scope="module")
def offscreen():
    ok, reason = offscreen_status()
    if not ok:
        pytest.skip(f"Open3D's OffscreenRenderer cannot start on this machine: {reason}")


@pytest.fixture(scope="module")
def bathtub():
    """First test-split bathtub: (points (N, 3), visible keypoints (K, 3), semantic ids (K,))."""
    from pckeypoints.data import KeypointNet

    if not (DATA / "annotations" / "bathtub.json").exists():
        pytest.skip(f"KeypointNet data not found at {DATA}")
    item = KeypointNet(DATA, "bathtub", split="test")[0]
    mask = item["mask"].numpy()
    return item["points"].numpy(), item["keypoints"].numpy()[mask], np.flatnonzero(mask)


def _colour_near(image, pixel, colour, radius=2, tolerance=3):
    """Whether ``colour`` appears within a (2 radius + 1)^2 window around pixel (column, row)."""
    col, row = pixel
    window = image[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1].astype(int)
    return bool((np.abs(window - colour).max(-1) <= tolerance).any())


# ---------------------------------------------------------------- colours

def test_semantic_colors_are_distinct_and_cycle():
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE)
    colors = semantic_colors([0, 1, len(PALETTE)])
    np.testing.assert_array_equal(colors[0], colors[2])
    assert not np.array_equal(colors[0], colors[1])
    with pytest.raises(ValueError, match="non-negative"):
        semantic_colors([-1])
    with pytest.raises(ValueError, match="integer"):
        semantic_colors([0.5])


def test_probability_colors_known_viridis_values():
    viridis_0 = [0.267004, 0.004874, 0.329415]  # first and last entries of matplotlib's viridis table
    viridis_1 = [0.993248, 0.906157, 0.143936]
    colors = probability_colors([0.2, 0.7, 0.45])  # min-max normalised to 0, 1, 0.5
    np.testing.assert_allclose(colors[0], viridis_0, atol=1e-6)
    np.testing.assert_allclose(colors[1], viridis_1, atol=1e-6)
    np.testing.assert_allclose(probability_colors([0.0, 1.0, 0.5])[2], colors[2])
    np.testing.assert_allclose(probability_colors([3.0, 3.0]), [viridis_0, viridis_0], atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        probability_colors([0.1, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        probability_colors(np.zeros((2, 2)))


# ---------------------------------------------------------------- camera

def test_camera_frames_the_cloud_and_projects_its_centre_to_the_image_centre():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (500, 3)) * [2.0, 0.5, 1.0] + [3.0, -1.0, 0.5]
    camera = look_at_bbox(points, 300, 200, azimuth=70, elevation=-30)
    pixels = camera.project(points)
    assert (pixels >= 0).all() and (pixels[:, 0] <= 300).all() and (pixels[:, 1] <= 200).all()
    assert (camera.to_camera(points)[:, 2] > 0).all()
    centre = (points.min(0) + points.max(0)) / 2
    np.testing.assert_allclose(camera.project(centre[None]), [[150, 100]], atol=1e-9)
    with pytest.raises(ValueError, match="NaN"):
        look_at_bbox(np.full((4, 3), np.nan), 10, 10)
    with pytest.raises(ValueError, match="empty cloud"):  # pckeypoints.validation.check_cloud's message
        look_at_bbox(np.zeros((0, 3)), 10, 10)


# ---------------------------------------------------------------- Open3D renders

def test_render_shows_sphere_colours_at_projected_keypoints(offscreen, bathtub, tmp_path):
    points, keypoints, ids = bathtub
    png = tmp_path / "bathtub.png"
    image = render_keypoints(points, keypoints, ids, png=png, width=WIDTH, height=HEIGHT)
    assert image.shape == (HEIGHT, WIDTH + LEGEND_WIDTH, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), image)

    camera = look_at_bbox(np.concatenate([points, keypoints]), WIDTH, HEIGHT)
    pixels = np.floor(camera.project(keypoints)).astype(int)
    colours = semantic_colors(ids)
    shown = [_colour_near(image, p, c) for p, c in zip(pixels, colours)]
    assert np.mean(shown) >= 0.9, f"only {sum(shown)}/{len(shown)} keypoints show their colour"
    # Without keypoints those colours are absent there: the check above can fail.
    cloud_only = render_image(points, width=WIDTH, height=HEIGHT, camera=camera)
    assert not any(_colour_near(cloud_only, p, c) for p, c in zip(pixels, colours))


def test_render_prediction_probability_map_and_samples(offscreen, bathtub):
    points, keypoints, ids = bathtub
    probs = np.exp(-np.linalg.norm(points - keypoints[0], axis=1) ** 2 / 0.01)
    pred = keypoints + [0.15, 0.0, 0.0]
    samples = keypoints[0] + np.random.default_rng(0).normal(0, 0.02, (64, 3))
    image = render_image(points, keypoints, ids, pred=pred, probs=probs, samples=samples,
                         width=WIDTH, height=HEIGHT, legend=False)
    pixels = image.reshape(-1, 3).astype(int)
    for colour in ([217, 0, 0], [255, 0, 255]):  # error lines, samples
        assert (np.abs(pixels - colour).max(1) <= 3).sum() > 20, colour
    viridis_low = np.round(probability_colors([0.0, 1.0])[0] * 255)
    assert (np.abs(pixels - viridis_low).max(1) <= 3).sum() > 500
    grey = np.round(np.array([0.62] * 3) * 255)
    assert (np.abs(pixels - grey).max(1) <= 3).sum() == 0


def test_render_rejects_bad_input(bathtub):
    points, keypoints, ids = bathtub
    with pytest.raises(ValueError, match="NaN"):
        render_image(np.where(np.arange(len(points))[:, None] == 3, np.nan, points))
    with pytest.raises(ValueError, match="shape"):
        render_image(points, keypoints, ids[:-1])
    with pytest.raises(ValueError, match="pred"):
        render_image(points, keypoints, ids, pred=keypoints[:-1])
    with pytest.raises(ValueError, match="probs"):
        render_image(points, probs=np.ones(len(points) - 1))


# ---------------------------------------------------------------- plots

def _png_size(path):
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        return image.size


def test_plot_pck_curves(tmp_path):
    thresholds = np.linspace(0, 0.1, 11)
    path = plot_pck_curves({"sampling-argmax": (thresholds, 1 - np.exp(-40 * thresholds)),
                            "soft-argmax": (thresholds, 1 - np.exp(-25 * thresholds))}, tmp_path / "pck.png")
    assert _png_size(path) == PLOT_SIZE
    with pytest.raises(ValueError, match="equally long"):
        plot_pck_curves({"x": (thresholds, thresholds[:-1])}, tmp_path / "bad.png")


def test_plot_training_curves_reads_numeric_columns(tmp_path):
    log = tmp_path / "log.csv"
    lines = ["epoch,split,loss,pck,note"]
    for epoch in range(5):
        lines += [f"{epoch},train,{1 / (epoch + 1)},{epoch / 5},ok", f"{epoch},val,{1.2 / (epoch + 1)},,ok"]
    log.write_text("\n".join(lines) + "\n")
    assert _png_size(plot_training_curves(log, tmp_path / "train.png")) == PLOT_SIZE
    (tmp_path / "bad.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="epoch"):
        plot_training_curves(tmp_path / "bad.csv", tmp_path / "bad.png")


def test_plot_time_curves_one_panel_per_key(tmp_path):
    from viz.plots import DPI, plot_time_curves

    line = {"x": [1, 2, 3], "y": [20.0, 35.0, 41.0], "label": "recipe", "color": 1, "end": (3, 44.0)}
    panels = {"bathtub": [line, {**line, "label": None, "dotted": True}], "bed": [line]}
    path = plot_time_curves(panels, tmp_path / "time.png", "minutes", "PCK (%)", {"bathtub": [(58.0, "target")]})
    assert _png_size(path) == (2 * 6 * DPI, int(4.2 * DPI))
    with pytest.raises(ValueError, match="equally long"):
        plot_time_curves({"bed": [{**line, "y": [1.0]}]}, tmp_path / "bad.png", "minutes", "PCK")
    with pytest.raises(ValueError, match="empty"):
        plot_time_curves({}, tmp_path / "bad.png", "minutes", "PCK")


def test_calibration_plot(tmp_path):
    """The bins are pckeypoints.metrics.calibration.reliability_bins' (tests/test_readouts_calibration.py)."""
    confidence = [0.05, 0.15, 0.12, 0.95, 1.0]
    correct = [False, True, False, True, True]
    assert _png_size(plot_calibration(confidence, correct, tmp_path / "cal.png")) == PLOT_SIZE
    assert _png_size(plot_calibration(confidence, correct, tmp_path / "both.png", before=[0.5] * 5)) == PLOT_SIZE
    with pytest.raises(ValueError, match="within"):
        plot_calibration([1.5], [True], tmp_path / "bad.png")


def test_panel_figure_and_save_figure(tmp_path):
    fig, axes = panel_figure(2, 3, (2.0, 1.5))
    assert axes.shape == (2, 3)
    for ax in axes.flat:
        ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "new" / "panels.png", dpi=50)  # the folder is created
    assert _png_size(path) == (300, 150)


def test_reliability_panels_and_curve_grid(tmp_path):
    from viz.plots import plot_curve_grid, plot_reliability_panels

    confidence, correct = np.array([0.05, 0.15, 0.12, 0.95]), np.array([False, True, False, True])
    panels = {"bathtub": {"a": (confidence, correct), "b": (1 - confidence, correct)}, "bed": {}}
    assert _png_size(plot_reliability_panels(panels, tmp_path / "rel.png")) == (2 * 450, 420)  # 4.5 x 4.2 in a panel
    with pytest.raises(ValueError, match="empty"):
        plot_reliability_panels({}, tmp_path / "none.png")
    x = np.linspace(0, 0.05, 5)
    grid = [[("bathtub", {"a": (x, x)}), ("bed", {})], [("bathtub geodesic", {"a": (x, -x)}), ("bed geodesic", {})]]
    assert _png_size(plot_curve_grid(grid, tmp_path / "grid.png", "t", "d", reference_x=0.01)) == (2 * 480, 2 * 375)
    with pytest.raises(ValueError, match="panel"):
        plot_curve_grid([[]], tmp_path / "bad.png", "t", "d")


def test_render_gallery_tiles(offscreen, bathtub, tmp_path):
    points, keypoints, ids = bathtub
    items = [{"points": points, "keypoints": keypoints, "semantic_ids": ids, "pred": keypoints + shift,
              "title": f"shift {shift}"} for shift in (0.0, 0.03, 0.1)]
    path = render_gallery(items, tmp_path / "gallery.png", ncols=2, width=160, height=120)
    assert _png_size(path) == (2 * 160, 2 * (120 + 24))
    titled = render_gallery(items, tmp_path / "titled.png", ncols=2, width=160, height=120, title="run on test",
                            legend=True)
    assert _png_size(titled) == (2 * 160, 2 * (120 + 24) + 24 + 20)  # a header band for the title and legend
    header = np.asarray(Image.open(titled).convert("L"))[:44]
    assert (header < 128).sum() > 100  # text and legend marks drawn in it


def test_cli_loads_open3d_without_notebook_support():
    """The viz command hides IPython while Open3D (and Dash) load, and leaves it importable afterwards."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("IPython") is None or importlib.util.find_spec("open3d") is None:
        pytest.skip("needs IPython (what Dash would load) and Open3D")
    code = ("import sys\nfrom viz.cli import _without_notebook_support\n"
            "with _without_notebook_support():\n    import open3d\n"
            "print('IPython' in sys.modules, 'open3d.visualization' in sys.modules)\n"
            "import IPython\nprint(IPython.get_ipython is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "True", "True"]


def test_cli_renders_a_shared_model_with_predictions(offscreen, bathtub, tmp_path):
    import argparse
    import json

    from viz import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    _, keypoints, ids = bathtub
    predictions = tmp_path / "pred.json"
    predictions.write_text(json.dumps({"keypoints": (keypoints + 0.05).tolist(), "semantic_ids": ids.tolist()}))
    png = tmp_path / "viz.png"
    args = parser.parse_args(["--category", "bathtub", "--data", str(DATA), "--keypoints", str(predictions),
                              "--png", str(png), "--width", str(WIDTH), "--height", str(HEIGHT)])
    assert cli.run(args) == 0
    assert _png_size(png) == (WIDTH + LEGEND_WIDTH, HEIGHT)
    assert cli.run(parser.parse_args(["x.pcd", "--category", "bathtub"])) == 2  # two sources


# ---------------------------------------------------------------- CLI with a trained model

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """(data folder, {mode: run folder}): 1-epoch runs of both tasks on a few real bathtubs."""
    import torch
    from keypointnet_subset import make_subset
    from test_training import tiny_config

    from pckeypoints.train.training import train

    data_root = make_subset(tmp_path_factory.mktemp("kpn"), "bathtub", {"train": 4, "val": 2, "test": 1})
    out = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    runs = {mode: train(tiny_config(data_root, out, mode=mode, name=mode, epochs=1, tau_end=0.2,
                                    num_keypoints=4 if mode == "unsupervised" else None), progress=False)
            for mode in ("supervised", "unsupervised")}
    return data_root, runs


SMALL_WIDTH, SMALL_HEIGHT = 320, 240  # software rendering is slow on 2 busy cores


def _viz_args(*argv):
    import argparse

    from viz import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["--width", str(SMALL_WIDTH), "--height", str(SMALL_HEIGHT), *argv])


def _viridis_pixels(image):
    """Number of pixels of the 3D view (legend cut off) within 3 levels of some viridis colour."""
    colours, counts = np.unique(image[:, :SMALL_WIDTH].reshape(-1, 3).astype(int), axis=0, return_counts=True)
    table = np.round(probability_colors(np.linspace(0, 1, 256)) * 255).astype(int)
    return int(counts[(np.abs(colours[:, None] - table[None]).max(-1) <= 3).any(-1)].sum())


def _magenta_pixels(image):
    return int((np.abs(image[:, :SMALL_WIDTH].astype(int) - [255, 0, 255]).max(-1) <= 3).sum())


def test_cli_draws_a_checkpoints_map_and_samples(offscreen, tiny_runs, tmp_path):
    from viz import cli

    data_root, runs = tiny_runs
    source = ["--category", "bathtub", "--data", str(data_root), "--checkpoint", str(runs["supervised"])]
    png = tmp_path / "map.png"
    assert cli.run(_viz_args(*source, "--map", "0", "--samples", "200", "--png", str(png))) == 0
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (SMALL_HEIGHT, SMALL_WIDTH + LEGEND_WIDTH, 3)
    assert _viridis_pixels(image) > 1000 and _magenta_pixels(image) > 20
    # The same prediction without map and samples: a grey cloud, no viridis or magenta points.
    plain = tmp_path / "plain.png"
    assert cli.run(_viz_args(*source, "--png", str(plain))) == 0
    plain_image = np.asarray(Image.open(plain).convert("RGB"))
    assert _viridis_pixels(plain_image) < 50 and _magenta_pixels(plain_image) == 0


@pytest.mark.parametrize("mode", ["supervised", "unsupervised"])
def test_model_view_is_in_the_clouds_own_coordinates(tiny_runs, bathtub, mode):
    from viz.cli import _model_view

    from pckeypoints.train.checkpoint import load_checkpoint

    _, runs = tiny_runs
    points, checkpoint = bathtub[0], load_checkpoint(runs[mode])
    view = _model_view(checkpoint, points, 1, 50, seed=3)
    moved = _model_view(checkpoint, 3.0 * points + [10.0, -2.0, 0.5], 1, 50, seed=3)
    # Normalisation removes scale and offset: the same maps and samples, mapped back to each cloud.
    np.testing.assert_allclose(moved["samples"], 3.0 * view["samples"] + [10.0, -2.0, 0.5], atol=1e-4)
    np.testing.assert_allclose(moved["keypoints"], 3.0 * view["keypoints"] + [10.0, -2.0, 0.5], atol=1e-4)
    np.testing.assert_allclose(moved["log_probs"], view["log_probs"], atol=1e-3)
    assert view["samples"].shape == (50, 3) and view["log_probs"].shape == (len(points),)
    np.testing.assert_allclose(np.exp(view["log_probs"]).sum(), 1.0, rtol=1e-5)
    assert (np.abs(view["samples"]).max(0) < np.abs(points).max(0) + 0.1).all()


def test_cli_gallery_gives_each_keypoint_index_one_colour(offscreen, tiny_runs, tmp_path):
    """``--gallery``: an unsupervised model's keypoints on several shapes, keypoint k in ``PALETTE[k]`` on each."""
    import torch
    from viz import cli

    from pckeypoints.train.checkpoint import load_checkpoint, save_checkpoint

    data_root, runs = tiny_runs
    _, model, config, checkpoint = load_checkpoint(runs["unsupervised"])
    with torch.no_grad():
        model.head.mlp[-1].weight.mul_(1000)  # peaked maps: the keypoints lie on distinct points of the surface
    save_checkpoint({**checkpoint, "model": model.state_dict()}, tmp_path / "peaked.pt")
    png = tmp_path / "gallery.png"
    assert cli.run(_viz_args("--category", "bathtub", "--data", str(data_root), "--split", "train", "--gallery", "3",
                             "--checkpoint", str(tmp_path / "peaked.pt"), "--png", str(png))) == 0
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape[1] == 3 * SMALL_WIDTH  # three tiles in a row
    pixels = [int((np.abs(image - colour).max(-1) <= 3).sum()) for colour in PALETTE[:8]]
    assert config.model.num_keypoints == 4 and min(pixels[:4]) > 10 and max(pixels[4:]) == 0, pixels


def test_cli_model_flag_errors(tiny_runs, capsys):
    from viz import cli

    data_root, runs = tiny_runs
    source = ["--category", "bathtub", "--data", str(data_root), "--png", "never.png"]
    checkpoint = ["--checkpoint", str(runs["supervised"])]
    for argv, problem in [(["--map", "0"], "--map needs --checkpoint"),
                          ([*checkpoint, "--samples", "5"], "--samples needs --map"),
                          ([*checkpoint, "--map", "0", "--samples", "0"], "--samples must be in 1..100000, got 0"),
                          ([*checkpoint, "--keypoints", "k.json"], "either --keypoints or --checkpoint"),
                          (["--gallery", "0"], "--gallery must be in 1..64, got 0"),
                          (["--gallery", "8", "--model-id", "x"], "drop the file or --model-id"),
                          ([*checkpoint, "--gallery", "8", "--map", "0"], "drop --keypoints, --map, --samples")]:
        assert cli.run(_viz_args(*source, *argv)) == 2
        assert problem in capsys.readouterr().err
    with pytest.raises(ValueError, match="out of range"):
        cli.run(_viz_args(*source, *checkpoint, "--map", "99"))
    with pytest.raises(ValueError, match="out of range"):
        cli.run(_viz_args(*source, "--checkpoint", str(runs["unsupervised"]), "--map", "4"))
    with pytest.raises(ValueError, match="not bed"):
        cli.run(_viz_args("--category", "bed", "--data", str(DATA), "--png", "never.png", *checkpoint))
    with pytest.raises(ValueError, match="trained on bathtub models, not bed ones"):
        cli.run(_viz_args("--category", "bed", "--data", str(DATA), "--png", "never.png", "--gallery", "8",
                          "--checkpoint", str(runs["unsupervised"])))
    with pytest.raises(ValueError, match="cannot read annotation file .*car.json"):  # no data of that category
        cli.run(_viz_args("--category", "car", "--data", str(data_root), "--png", "never.png", "--gallery", "8"))
    assert cli.run(_viz_args("--category", "bathtub", "--gallery", "8")) == 2
    assert "--gallery writes a PNG" in capsys.readouterr().err
    assert not os.path.exists("never.png")
