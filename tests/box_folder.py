"""A generated folder dataset (:mod:`pckeypoints.data.folder` format): boxes with their 8 corners as keypoints."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from pckeypoints.data import read_geometry

#: File formats of the generated models, in turn: clouds first, then meshes.
SUFFIXES = (".npy", ".xyz", ".pcd", ".ply", ".obj", ".off", ".stl")
CORNER_NAMES = [f"corner_{'-+'[i & 1]}x{'-+'[i >> 1 & 1]}y{'-+'[i >> 2 & 1]}z" for i in range(8)]


def corners(extents: np.ndarray, center: np.ndarray) -> np.ndarray:
    """``(8, 3)`` corners of an axis-aligned box; row ``i``'s signs are the bits of ``i`` (x, y, z)."""
    signs = np.array([[1 if i >> axis & 1 else -1 for axis in range(3)] for i in range(8)])
    return center + signs * extents / 2


def _surface_samples(extents: np.ndarray, center: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    points = rng.uniform(-0.5, 0.5, (count, 3))
    axis = rng.integers(0, 3, count)
    points[np.arange(count), axis] = rng.choice([-0.5, 0.5], count)  # onto a face
    return center + points * extents


def _write_cloud(path: Path, points: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, points)
    elif path.suffix == ".xyz":
        np.savetxt(path, points)
    elif path.suffix == ".pcd":
        header = (f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {len(points)}\nHEIGHT 1\n"
                  f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(points)}\nDATA ascii\n")
        path.write_text(header + "".join(f"{x:.7g} {y:.7g} {z:.7g}\n" for x, y, z in points))
    else:
        import trimesh

        trimesh.PointCloud(points).export(path)


def make_box_folder(root: Path, num_models: int = 14, keypoint_file: str = "json", seed: int = 0,
                    splits: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """Write ``num_models`` boxes (``SUFFIXES`` in turn) and their corners as keypoints into ``root``.

    Clouds hold surface samples (1500 or 3000 points) plus the 8 corners; corners are annotated by ``xyz`` on even
    models and by ``point_index`` on odd ones (mesh: vertex index). Model 2 lacks corner 7. Returns
    ``{model_id: corners (8, 3)}`` (the ground truth, NaN rows where not annotated).
    """
    rng = np.random.default_rng(seed)
    (root / "models").mkdir(parents=True)
    truth, models = {}, []
    for n in range(num_models):
        suffix = SUFFIXES[n % len(SUFFIXES)]
        model_id = f"box{n:02d}"
        extents, center = rng.uniform(0.4, 1.2, 3), rng.uniform(-0.3, 0.3, 3)
        box = corners(extents, center)
        file = f"models/{model_id}{suffix}"
        if suffix in (".obj", ".off", ".stl"):
            import trimesh

            mesh = trimesh.creation.box(extents=extents)
            mesh.apply_translation(center)
            mesh.export(root / file)
            vertices = read_geometry(root / file)[0]  # as the dataset reads it (STL repeats corners)
        else:
            samples = _surface_samples(extents, center, 1500 if n % 2 else 3000, rng)
            vertices = np.concatenate([samples, box])[rng.permutation(len(samples) + 8)]
            _write_cloud(root / file, vertices)
        index = [int(np.linalg.norm(np.asarray(vertices) - c, axis=1).argmin()) for c in box]
        keypoints = [{"semantic_id": i, "point_index": index[i]} if n % 2 else
                     {"semantic_id": i, "xyz": box[i].tolist()} for i in range(8) if not (n == 2 and i == 7)]
        models.append({"file": file, "keypoints": keypoints})
        truth[model_id] = np.where(np.arange(8)[:, None] == 7, np.nan, box) if n == 2 else box
    if keypoint_file == "json":
        (root / "keypoints.json").write_text(json.dumps({"keypoint_names": CORNER_NAMES, "models": models}, indent=1))
    else:
        with open(root / "keypoints.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "semantic_id", "x", "y", "z", "point_index"])
            for model in models:
                for k in model["keypoints"]:
                    xyz = k.get("xyz", ["", "", ""])
                    writer.writerow([model["file"], k["semantic_id"], *xyz, k.get("point_index", "")])
    if splits is not None:
        (root / "splits.json").write_text(json.dumps(splits))
    return truth


def seamed_meshes() -> dict[str, tuple[bytes, np.ndarray]]:
    """A box as an OBJ with vt/vn seams, groups, a quad, negative indices, and as a PLY with per-face texture
    coordinates, each with an unreferenced vertex at index 2: ``{file name: (content, its vertices in order)}``."""
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    vertices = np.insert(np.asarray(box.vertices), 2, [0.1, 0.05, 0.0], axis=0)  # inside, used by no face
    faces = np.where(box.faces >= 2, box.faces + 1, box.faces)
    lines = [f"v {x} {y} {z}" for x, y, z in vertices] + ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "vn 0 0 1"]
    for n, (a, b, c) in enumerate(faces[:-2]):
        lines += ([f"o part{n}", "usemtl m"] if n % 4 == 0 else []) + [f"f {a + 1}/{n % 4 + 1}/1 {b + 1}/1/1 "
                                                                        f"{c + 1}/{(n + 1) % 4 + 1}/1"]
    (a, b, c), (_, _, d) = faces[-2:]  # the last two triangles as one quad, indices relative to the end
    lines.append(" ".join(["f", *(f"{i - len(vertices)}//1" for i in (a, b, c, d))]))
    ply = ["ply", "format ascii 1.0", f"element vertex {len(vertices)}", *(f"property double {a}" for a in "xyz"),
           f"element face {len(faces)}", "property list uchar int vertex_indices", "property list uchar float texcoord",
           "end_header", *(f"{x} {y} {z}" for x, y, z in vertices),
           *(f"3 {a} {b} {c} 6 {n % 2} 0 1 {n % 3 / 2} 0 1" for n, (a, b, c) in enumerate(faces))]
    return {"seamed.obj": ("\n".join(lines).encode() + b"\n", vertices),
            "seamed_ply.ply": ("\n".join(ply).encode() + b"\n", vertices)}
