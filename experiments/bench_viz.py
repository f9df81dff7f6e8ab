"""Headless render speed: Open3D's legacy ``Visualizer`` (what ``viz`` uses) against ``OffscreenRenderer``.

    python -m experiments.bench_viz [--model bathtub] [--repeat 3]

1. One 640x480 scene (the first test bathtub, its keypoints and predictions 0.05 off) rendered by each
   backend in a fresh process: the first render (context or engine start included) and the best of the
   next ``repeat`` renders, with the process's peak memory. ``OffscreenRenderer`` runs as ``viz`` did before
   (a probe child process first, since a failing start crashes the process; unlit materials,
   post-processing off).
2. The command a user runs, end to end in a fresh process (Python start, imports, model, render):
   ``pckeypoints viz FILE --png`` and ``pckeypoints viz FILE --model MODEL --png``; the first call, then the
   best and median of ``repeat`` more. ``MODEL`` defaults to the shipped ``bathtub``, else the quick-start
   run ``runs/bathtub_small``; the row is left out when neither exists.
3. What the command's time goes to: the wall time of each big import in a fresh process (best of
   ``repeat + 1``), after the modules it needs anyway (``torch`` before ``torch._dynamo`` and Triton).

Times are wall seconds and CPU seconds (user + system, all threads of the process): on a shared machine
the CPU time is what an idle one would take as wall time. Writes ``experiments/results/bench_viz.json``
and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.benchutil import RESULTS, save_results
from pckeypoints.evaluation.report import markdown_table

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480

_RENDER = """
import json, resource, sys, time
import numpy as np
from pckeypoints.data import KeypointNet
from viz.camera import look_at_bbox
from viz.scene import build_scene

backend, repeat = sys.argv[1], int(sys.argv[2])
item = KeypointNet(None, "bathtub", "test")[0]
mask = item["mask"].numpy()
points, keypoints = item["points"].numpy(), item["keypoints"].numpy()[mask]
pred = keypoints + 0.05
camera = look_at_bbox(np.concatenate([points, keypoints, pred]), {width}, {height})

if backend == "legacy":
    from viz.offscreen import render_scene
else:
    from open3d.visualization import rendering

    renderer = None

    def render_scene(scene, camera):
        global renderer
        if renderer is None:  # as viz did: a child process first checks that the renderer starts
            import subprocess
            probe = ("from open3d.visualization import rendering; import numpy as np; "
                     "assert np.asarray(rendering.OffscreenRenderer(32, 24).render_to_image()).shape == (24, 32, 3)")
            subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True)
            renderer = rendering.OffscreenRenderer(camera.width, camera.height)
            view = renderer.scene.view
            view.set_post_processing(False); view.set_antialiasing(False); view.set_sample_count(1)
            view.set_ambient_occlusion(False); view.set_shadowing(False)
            renderer.scene.scene.enable_sun_light(False); renderer.scene.scene.enable_indirect_light(False)
            renderer.scene.show_skybox(False)
        renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
        for n, item in enumerate(scene):
            material = rendering.MaterialRecord()
            material.shader = "unlitLine" if item.line_width else "defaultUnlit"
            material.point_size, material.line_width = item.point_size or 1.0, item.line_width or 1.0
            renderer.scene.add_geometry(str(n), item.geometry, material)
        renderer.setup_camera(camera.intrinsic, camera.extrinsic, camera.width, camera.height)
        image = np.array(renderer.render_to_image())
        for n in range(len(scene)):
            renderer.scene.remove_geometry(str(n))
        return image

times, cpu = [], []
for _ in range(repeat + 1):
    start, start_cpu = time.perf_counter(), time.process_time()
    image = render_scene(build_scene(points, keypoints, pred=pred), camera)
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
assert image.shape == ({height}, {width}, 3)
print(json.dumps({{"first_s": times[0], "first_cpu_s": cpu[0], "next_best_s": min(times[1:]),
                  "next_best_cpu_s": min(cpu[1:]),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""".format(width=WIDTH, height=HEIGHT)

_CLI = """
import json, resource, sys
from pckeypoints.cli import main
code = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}))
"""


_IMPORT = """
import importlib, json, sys, time
for name in sys.argv[2:]:
    if name.startswith("-"):  # hidden: importing it raises ImportError
        sys.modules[name[1:]] = None
    else:
        importlib.import_module(name)
start = time.perf_counter()
importlib.import_module(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""
#: (import, modules loaded before it (what the viz command has loaded by then anyway), "-M": M hidden)
IMPORTS = [("torch", ()), ("open3d", ()), ("open3d", ("-IPython",)), ("dash", ("plotly.graph_objects",)),
           ("plotly.graph_objects", ()), ("torch._dynamo", ("torch",)), ("triton", ("torch",))]


def _run(code: str, *args: str) -> tuple[dict, float]:
    """(the JSON the child prints last, wall seconds) of ``python -c code args``."""
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({child.returncode}):\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]), wall


def _default_model() -> str | None:
    from pckeypoints.pretrained import REGISTRY, pretrained_models

    if "bathtub" in pretrained_models() and (REGISTRY.parent / pretrained_models()["bathtub"]["file"]).is_file():
        return "bathtub"
    quick_start = ROOT / "runs" / "bathtub_small"
    return str(quick_start) if (quick_start / "best.pt").is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="shipped name, run folder or checkpoint (default: bathtub, else "
                                        "runs/bathtub_small)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from pckeypoints.data import KeypointNet

    render_rows = []
    for backend, label in (("legacy", "legacy Visualizer (EGL)"), ("filament", "OffscreenRenderer (Filament)")):
        result, _ = _run(_RENDER, backend, str(args.repeat))
        render_rows.append({"backend": label, **result})

    dataset = KeypointNet(None, "bathtub", "test")
    cloud = str(dataset.root / "pcds" / dataset.class_id / f"{dataset.model_ids[0]}.pcd")
    model = args.model or _default_model()
    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())
    cli_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"viz FILE --png": ["viz", cloud, "--png", f"{tmp}/cloud.png"]}
        if model is not None:
            commands[f"viz FILE --model {Path(model).name} --png"] = ["viz", cloud, "--model", model, "--png",
                                                                     f"{tmp}/model.png"]
        for label, argv in commands.items():
            runs = [_run(_CLI, *argv) for _ in range(args.repeat + 1)]
            if any(result["code"] != 0 for result, _ in runs):
                raise RuntimeError(f"pckeypoints {' '.join(argv)} failed")
            walls = [wall for _, wall in runs]
            cpu = [result["cpu_s"] for result, _ in runs]
            cli_rows.append({"command": label, "first_s": walls[0], "next_best_s": min(walls[1:]),
                             "next_median_s": statistics.median(walls[1:]), "first_cpu_s": cpu[0],
                             "next_best_cpu_s": min(cpu[1:]), "peak_mb": max(result["peak_mb"] for result, _ in runs)})

    import_rows = [{"import": name, "after": " ".join(before) or "-",
                    "best_s": min(_run(_IMPORT, name, *before)[0]["seconds"] for _ in range(args.repeat + 1))}
                   for name, before in IMPORTS]

    config = {"size": [WIDTH, HEIGHT], "repeat": args.repeat, "cloud": Path(cloud).name, "model": model,
              "load_average": os.getloadavg()[0]}
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)
    table = lambda rows: markdown_table(list(rows[0]), [[fmt(v) for v in row.values()] for row in rows],
                                        align=False).splitlines()
    lines = ["# bench_viz: headless PNG renders", "", f"config: `{json.dumps(config)}`", "",
             "One scene (first test bathtub, keypoints and predictions), each backend in a fresh process:", ""]
    lines += table(render_rows)
    lines += ["", "The command, end to end in a fresh process (Python start, imports, model, render):", ""]
    lines += table(cli_rows)
    lines += ["", "Imports, each in a fresh process after the modules named (-M: with M hidden, as `viz` hides IPython "
              "from Open3D's Dash):", ""]
    lines += table(import_rows)
    save_results(RESULTS, "bench_viz", {"config": config, "render": render_rows, "cli": cli_rows,
                                        "imports": import_rows},
                 "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
