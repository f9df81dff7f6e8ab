"""Reading point clouds: PCD files (ASCII / binary, our own parser) and meshes or clouds in other formats.

``read_pcd`` parses ASCII and binary PCD with numpy and raises a :class:`~pckeypoints.errors.ReadError` naming the file for every kind of
corruption (bad header, missing ``x y z`` fields, wrong ``POINTS`` count, truncated or non-numeric data).
``binary_compressed`` (LZF) files are handed to Open3D, which returns coordinates and colours only.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from pckeypoints.errors import ReadError

__all__ = ["POINT_FILE_SUFFIXES", "read_geometry", "read_pcd", "read_points"]

_HEADER_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
_NUMPY_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("U", 1): "<u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8",
                ("I", 1): "<i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8"}
_NOT_TEXT = re.compile(rb"[^\t\r\x20-\x7e]")  # bytes that cannot be in a PCD header line
_CLOUD_SUFFIXES = {".pcd", ".xyz", ".npy"}
_MESH_SUFFIXES = {".ply", ".obj", ".off", ".stl"}
#: File suffixes :func:`read_points` reads (lower case): clouds, and meshes it samples.
POINT_FILE_SUFFIXES = frozenset(_CLOUD_SUFFIXES | _MESH_SUFFIXES)


def read_pcd(path: str | Path, return_rgb: bool = False, dtype=np.float32):
    """Read a PCD file.

    Args:
        path: ``.pcd`` file with ``DATA ascii``, ``binary`` or ``binary_compressed`` (the latter through Open3D).
        return_rgb: also return the ``rgb``/``rgba`` field unpacked to ``(N, 3) uint8`` (white when absent).
        dtype: of the returned points; ``np.float64`` keeps the precision of coordinates far from the origin.

    Returns:
        ``points (N, 3) dtype``, or ``(points, rgb)`` when ``return_rgb``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ReadError(f"cannot read point cloud {path}: {err.strerror or err}") from err
    header, data_start = _parse_header(raw, path)
    fields = header["FIELDS"]
    if header["DATA"] == "binary_compressed":
        _check_compressed(raw[data_start:], header, path)
        points, rgb = _read_with_open3d(path, header["POINTS"], dtype)
    else:
        columns = _read_ascii(raw[data_start:], header, path) if header["DATA"] == "ascii" else \
            _read_binary(raw[data_start:], header, path)
        points = np.stack([columns[name] for name in "xyz"], axis=1).astype(dtype)
        colour = next((name for name in ("rgb", "rgba") if name in fields), None)
        rgb = _unpack_rgb(columns[colour]) if colour else np.full((len(points), 3), 255, np.uint8)
    if not np.isfinite(points).all():
        raise ReadError(f"point cloud {path} has non-finite coordinates")
    return (points, rgb) if return_rgb else points


def read_points(path: str | Path, num_points: int = 2048, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Read a point cloud, or sample one from a mesh, as ``(N, 3) dtype``.

    Clouds (``.pcd``, ``.xyz``, ``.npy``, ``.ply`` without faces) are returned as is (all their points). Meshes
    (``.obj``, ``.off``, ``.stl``, ``.ply`` with faces) are sampled uniformly on the surface with trimesh:
    ``num_points`` points, reproducible through ``seed``.
    """
    vertices, faces = read_geometry(path, dtype)
    if faces is None:
        return vertices
    if num_points < 1:
        raise ReadError(f"num_points must be positive, got {num_points}")
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    with np.errstate(over="ignore", invalid="ignore"):
        area = mesh.area
    if not (np.isfinite(area) and area > 0):
        raise ReadError(f"{path}: cannot sample its surface (total area {area})")
    points, _ = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    return np.asarray(points, dtype=dtype)


def read_geometry(path: str | Path, dtype=np.float32) -> tuple[np.ndarray, np.ndarray | None]:
    """``(vertices (V, 3) dtype, faces (F, 3) int64)`` of a mesh, ``(points (N, 3) dtype, None)`` of a cloud.

    ``.pcd`` (see :func:`read_pcd`), ``.xyz`` (text, one ``x y z ...`` line per point), ``.npy`` (``(N, 3+)`` array;
    extra columns are ignored), ``.obj`` (its ``v`` and ``f`` lines, so that vertex ``i`` is the file's ``i``-th
    ``v`` line, whatever its ``vt``/``vn`` seams and groups) and, through trimesh, ``.ply`` (its vertices in file
    order, not split at texture seams), ``.off``, ``.stl``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_FILE_SUFFIXES:
        raise ReadError(f"unsupported point cloud format {path.suffix!r} for {path}: "
                         f"expected {', '.join(sorted(POINT_FILE_SUFFIXES))}")
    if suffix == ".pcd":
        return read_pcd(path, dtype=dtype), None
    if not path.is_file():
        raise ReadError(f"cannot read point cloud {path}: no such file")
    faces = None
    if suffix in (".xyz", ".npy"):
        try:
            with warnings.catch_warnings():  # an empty file: "holds no 3D points" below
                warnings.simplefilter("ignore", UserWarning)
                array = np.load(path, allow_pickle=False) if suffix == ".npy" else np.loadtxt(path, ndmin=2)
        except (OSError, ValueError) as err:
            raise ReadError(f"cannot read {path}: {err}") from err
        vertices = array[:, :3] if array.ndim == 2 and array.shape[1] >= 3 else np.zeros((0, 0))
    elif suffix == ".obj":
        vertices, faces = _read_obj(path)
    else:
        import trimesh

        try:
            with np.errstate(all="ignore"):  # out-of-range values: caught below as non-finite
                geometry = trimesh.load(path, force="mesh" if suffix != ".ply" else None, process=False,
                                        **{"fix_texture": False} if suffix == ".ply" else {})
        except Exception as err:  # trimesh raises many exception types for corrupt files
            raise ReadError(f"cannot read {path}: {err}") from err
        if isinstance(geometry, trimesh.Scene):
            geometry = geometry.to_geometry()
        vertices = np.asarray(geometry.vertices)
        if getattr(geometry, "faces", None) is not None and len(geometry.faces) > 0:
            faces = np.asarray(geometry.faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise ReadError(f"{path} holds no 3D points")
    with np.errstate(over="ignore"):
        vertices = vertices.astype(dtype)
    if not np.isfinite(vertices).all():
        raise ReadError(f"{path} has non-finite coordinates (or ones too large for {np.dtype(dtype).name})")
    if faces is not None and (faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0
                              or faces.max() >= len(vertices)):
        raise ReadError(f"{path} has faces that are not triangles of its {len(vertices)} vertices")
    return vertices, faces


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``v`` lines of an OBJ file in file order (unreferenced ones too) and its ``f`` polygons as triangle
    fans of their vertex indices (``i``, ``i/t``, ``i//n``, ``i/t/n``; negative: relative to the last ``v``)."""
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as err:
        raise ReadError(f"cannot read {path}: {err.strerror or err}") from err
    vertices, faces = [], []
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens or tokens[0] not in ("v", "f"):
            continue
        try:
            if tokens[0] == "v":
                vertices.append([float(t) for t in tokens[1:4]])
                if len(vertices[-1]) != 3:
                    raise ValueError
                continue
            corners = [int(t.split("/")[0]) for t in tokens[1:]]
        except ValueError:
            raise ReadError(f"cannot read {path}: line {number} is not a valid {tokens[0]!r} line") from None
        if len(corners) < 3 or not all(0 < abs(c) < 2**62 for c in corners):
            raise ReadError(f"cannot read {path}: line {number} is not a face of vertices 1, 2, ...")
        corners = [c - 1 if c > 0 else len(vertices) + c for c in corners]
        faces += [[corners[0], corners[i], corners[i + 1]] for i in range(1, len(corners) - 1)]
    return np.array(vertices, dtype=np.float64).reshape(-1, 3), np.array(faces, dtype=np.int64) if faces else None


def _parse_header(raw: bytes, path: Path) -> tuple[dict, int]:
    header, offset = {}, 0
    while "DATA" not in header:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise ReadError(f"corrupt PCD {path}: header ends before a DATA line")
        if _NOT_TEXT.search(raw, offset, end):
            raise ReadError(f"corrupt PCD {path}: binary data in the header (not a PCD file?)")
        line = raw[offset:end].decode("ascii").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        if key.upper() not in _HEADER_KEYS:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise ReadError(f"corrupt PCD {path}: unknown header line {shown!r}")
        header[key.upper()] = values
    try:
        fields = header["FIELDS"]
        count = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        size = [int(s) for s in header["SIZE"]]
        types = [t.upper() for t in header["TYPE"]]
        num_points = int(header["POINTS"][0]) if "POINTS" in header else \
            int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        data = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as err:
        raise ReadError(f"corrupt PCD {path}: bad or missing header entry ({err})") from err
    if not len(fields) == len(count) == len(size) == len(types):
        raise ReadError(f"corrupt PCD {path}: FIELDS, SIZE, TYPE and COUNT have different lengths")
    if not {"x", "y", "z"} <= set(fields):
        raise ReadError(f"corrupt PCD {path}: FIELDS {' '.join(fields)} lack x y z")
    if data not in ("ascii", "binary", "binary_compressed"):
        raise ReadError(f"corrupt PCD {path}: unknown DATA {data!r}")
    if num_points < 0:
        raise ReadError(f"corrupt PCD {path}: negative POINTS {num_points}")
    if min(count) < 1:
        raise ReadError(f"corrupt PCD {path}: COUNT {' '.join(map(str, count))} has a value below 1")
    for name, t, s in zip(fields, types, size):
        if (t, s) not in _NUMPY_TYPES:
            raise ReadError(f"corrupt PCD {path}: field {name} has unsupported TYPE {t} SIZE {s}")
    return {"FIELDS": fields, "COUNT": count, "SIZE": size, "TYPE": types, "POINTS": num_points, "DATA": data}, offset


def _columns(header: dict) -> list[tuple[str, int, str]]:
    """(field name, first column, numpy dtype) of every field, in file order."""
    columns, start = [], 0
    for name, t, s, c in zip(header["FIELDS"], header["TYPE"], header["SIZE"], header["COUNT"]):
        columns.append((name, start, _NUMPY_TYPES[(t, s)]))
        start += c
    return columns


def _read_ascii(body: bytes, header: dict, path: Path) -> dict[str, np.ndarray]:
    width = sum(header["COUNT"])
    body = body.strip()
    num_lines = body.count(b"\n") + 1 if body else 0
    if num_lines != header["POINTS"]:
        raise ReadError(f"corrupt PCD {path}: header says POINTS {header['POINTS']} but the file has "
                         f"{num_lines} data lines")
    tokens = body.split()
    if len(tokens) != header["POINTS"] * width:
        raise ReadError(f"corrupt PCD {path}: expected {header['POINTS']} x {width} values, found {len(tokens)} "
                         f"(truncated or ragged data)")
    try:
        values = np.array(tokens, dtype=np.float64).reshape(header["POINTS"], width)
    except ValueError as err:
        raise ReadError(f"corrupt PCD {path}: non-numeric value in data ({err})") from err
    columns = {}
    for name, start, dtype in _columns(header):
        column = values[:, start]
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values: caught as non-finite x y z
            # Coordinates stay float64 whatever TYPE/SIZE say (the text has every digit; callers centre before
            # casting); packed colours written as floats keep their bit pattern only in float32.
            columns[name] = column if name in "xyz" else column.astype(np.float32) if dtype == "<f4" else \
                column.astype(dtype)
    return columns


def _row_type(header: dict, path: Path) -> np.dtype:
    """The numpy record type of one point of a binary PCD."""
    try:
        return np.dtype([(f"{name}_{i}", _NUMPY_TYPES[(t, s)], (c,))
                         for i, (name, t, s, c) in enumerate(zip(header["FIELDS"], header["TYPE"], header["SIZE"],
                                                                 header["COUNT"]))])
    except (ValueError, OverflowError) as err:
        raise ReadError(f"corrupt PCD {path}: impossible field layout ({err})") from None


def _check_compressed(body: bytes, header: dict, path: Path) -> None:
    """The sizes before LZF data must fit the file and the header, before Open3D decodes it."""
    if len(body) < 8:
        raise ReadError(f"corrupt PCD {path}: binary_compressed data is truncated")
    compressed, uncompressed = np.frombuffer(body[:8], "<u4")
    if compressed > len(body) - 8 or uncompressed != header["POINTS"] * _row_type(header, path).itemsize:
        raise ReadError(f"corrupt PCD {path}: binary_compressed sizes {compressed}/{uncompressed} do not fit "
                        f"the file ({len(body) - 8} bytes) and header ({header['POINTS']} points)")


def _read_binary(body: bytes, header: dict, path: Path) -> dict[str, np.ndarray]:
    dtype = _row_type(header, path)
    expected = header["POINTS"] * dtype.itemsize
    if len(body) < expected:
        raise ReadError(f"corrupt PCD {path}: binary data has {len(body)} bytes, {header['POINTS']} points need "
                         f"{expected} (truncated)")
    table = np.frombuffer(body, dtype=dtype, count=header["POINTS"])
    return {name: table[f"{name}_{i}"][:, 0] for i, name in enumerate(header["FIELDS"])}


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """PCL packs colours as 0x00RRGGBB in a uint32 (stored as U4 or as the bits of an F4)."""
    bits = packed.view(np.uint32) if packed.dtype == np.float32 else packed.astype(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)


def _read_with_open3d(path: Path, num_points: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    from pckeypoints.extras import require

    o3d = require("open3d", f"reading the binary_compressed PCD {path}")

    cloud = o3d.io.read_point_cloud(str(path), format="pcd", remove_nan_points=False, remove_infinite_points=False)
    points = np.asarray(cloud.points, dtype=dtype)
    if len(points) != num_points:
        raise ReadError(f"corrupt PCD {path}: header says POINTS {num_points}, Open3D decoded {len(points)}")
    rgb = (np.asarray(cloud.colors) * 255).round().astype(np.uint8) if cloud.has_colors() else \
        np.full((num_points, 3), 255, np.uint8)
    return points, rgb
