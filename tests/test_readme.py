"""The README's Python blocks run (extracted and executed in order, one namespace)."""
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_using_it_and_pyg_blocks_run():
    pytest.importorskip("torch_geometric")
    code = blocks()
    assert "PointNet2Keypoints" in code[1] and "use_as_pyg_backend" in code[1]
    space = {}
    torch.manual_seed(0)
    exec(compile(code[0], "README block 1", "exec"), space)
    exec(compile(code[1], "README block 2", "exec"), space)  # the PyG PointNet++ (was NameError: batch)
    assert space["maps"].logits.shape == (3200, 10) and torch.isfinite(space["loss"])
    assert space["x"].shape == (3200, 64)


def test_the_data_block_runs_on_a_folder(tmp_path, monkeypatch):
    pytest.importorskip("torch_geometric")
    from box_folder import make_box_folder

    make_box_folder(tmp_path / "my_chairs", num_models=8)
    monkeypatch.chdir(tmp_path)
    space = {}
    exec(compile(blocks()[2], "README block 3", "exec"), space)
    assert space["batch"].y.shape[0] == space["batch"].num_graphs


def test_readme_names_each_librarys_normalized_grid_convention():
    line = next(b for b in blocks()[0].split("\n\n") if "dsntnn" in b)
    assert "kornia's" in line and "align_corners=True" in line and "dsntnn's with align_corners=False" in line
