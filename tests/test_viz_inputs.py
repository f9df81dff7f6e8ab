"""``pckeypoints viz`` reads what ``predict`` reads and names the file in every input error (issue 11 defect 8)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from pckeypoints.cli import main
from pckeypoints.errors import ReadError
from viz.cli import read_keypoints_json


@pytest.fixture
def drawn(monkeypatch):
    """What viz hands to the renderer (rendering itself is tested in test_viz)."""
    calls = []
    monkeypatch.setattr("viz.render.render_keypoints", lambda points, keypoints, ids, **kw: calls.append(
        (np.asarray(points), None if keypoints is None else np.asarray(keypoints), ids)))
    return calls


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".off", ".stl"])
def test_viz_reads_every_mesh_format(tmp_path, drawn, suffix):
    trimesh.creation.box(extents=(0.8, 0.3, 0.4)).export(tmp_path / f"box{suffix}")
    kp = tmp_path / "kp.json"
    kp.write_text(json.dumps({"keypoints": [[0.4, 0.15, 0.2], [-0.4, 0, 0]], "semantic_ids": [3, 5]}))
    assert main(["viz", str(tmp_path / f"box{suffix}"), "--keypoints", str(kp), "--png", str(tmp_path / "a.png")]) == 0
    points, keypoints, ids = drawn[-1]
    assert points.shape == (2048, 3) and (np.abs(points) <= [0.4 + 1e-6, 0.15 + 1e-6, 0.2 + 1e-6]).all()
    assert keypoints.tolist() == [[0.4, 0.15, 0.2], [-0.4, 0, 0]] and list(ids) == [3, 5]


@pytest.mark.parametrize("content, problem", [
    ('{"keypoints": [0.1, 0.2, 0.3]}', "list of \\[x, y, z\\] number triples"),
    ('{"keypoints": [[0.1, 0.2]]}', "number triples"),
    ('{"keypoints": [[0.1, 0.2, "a"]]}', "number triples"),
    ('{"keypoints": [[0.1, 0.2, 1e999]]}', "non-finite"),
    ('[[0.1, 0.2, 0.3]]', "expected a JSON object"),
    ('{"keypoints": [[0, 0, 0]], "semantic_ids": [1, 2]}', "1 keypoints but 2 semantic_ids"),
    ('{"keypoints": [[0, 0, 0]], "semantic_ids": [1.5]}', "list of integers"),
    ('{"keypoints": [[0, 0, 0]', "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
])
def test_keypoint_json_errors_name_the_file(tmp_path, content, problem):
    path = tmp_path / "kp.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ReadError, match=problem) as err:
        read_keypoints_json(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(ReadError, match="kp_missing.json"):
        read_keypoints_json(str(tmp_path / "kp_missing.json"))


def test_garbage_pcd_error_prints_no_raw_bytes(tmp_path, capsys):
    path = tmp_path / "junk.pcd"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" * 20)
    assert main(["viz", str(path), "--png", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert str(path) in err and "binary data in the header" in err
    assert err.isascii() and err.isprintable() and len(err.splitlines()) == 1
