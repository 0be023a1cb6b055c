"""The raw NYUv2 labelled set (``nyu_depth_v2_labeled.mat``, MATLAB v7.3) with the
user-supplied split and class-mapping files: a strict reader, the conversion to the same
``roaming-h5`` file as the MTAN reader, surface normals from depth, and a synthetic fixture.

The raw folder holds, side by side (the last three from ankurhanda/nyuv2-meta-data, which has
no licence, so the project never ships them):

- ``nyu_depth_v2_labeled.mat``: HDF5 with a MATLAB user block, so h5py sees MATLAB's axes
  reversed: ``images`` (N, 3, W, H) uint8, ``labels`` (N, W, H) with 0 = unlabelled and
  1…894 = the raw classes, ``depths`` (in-painted) and ``rawDepths`` (0 = missing) in metres;
- ``splits.mat``: ``trainNdxs`` and ``testNdxs``, 1-based indices into the N images (795/654);
- ``classMapping40.mat``: ``mapClass``, raw class (1…894) → 40 classes (1…40);
- ``class13Mapping.mat``: ``classMapping13.labels13``, 40 → 13 classes (1…13), and
  ``classMapping13.classNames``, which must be MTAN's 13 names in MTAN's order;
- optionally ``normals/<k>.npy``: (H, W, 3) unit normals of image ``k`` (1-based), in MTAN's
  convention. Without them, normals are computed from depth (:func:`normals_from_depth`).

Labels become ``labels13[mapClass[ℓ−1]−1] − 1`` (MTAN's ids) and −1 for unlabelled. Each
problem is a :class:`~roaming.errors.DataError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from roaming.atomic import atomic_dir
from roaming.data.dense import (
    NYUV2_CLASSES,
    H5Split,
    check_conversion,
    check_field_header,
    check_normals,
    interpolation,
    load_npy,
    npy_header,
    resize_image,
    resize_nearest,
    write_dense_h5,
)
from roaming.data.prepared import write_fixture_marker
from roaming.errors import ConfigError, DataError

SOURCE_FORMAT = "nyu_labeled_mat"
MAT_FILE = "nyu_depth_v2_labeled.mat"
SPLITS_FILE = "splits.mat"
MAP40_FILE = "classMapping40.mat"
MAP13_FILE = "class13Mapping.mat"
NORMALS_DIR = "normals"
SPLIT_KEYS: dict[str, str] = {"train": "trainNdxs", "test": "testNdxs"}
"""Our split name → its variable in ``splits.mat``."""
DEFAULT_SIZE: tuple[int, int] = (288, 384)
"""Output (H, W) by default: MTAN's NYUv2 resolution."""
DEPTH_SOURCES: dict[str, str] = {"inpainted": "depths", "raw": "rawDepths"}
"""``--depth`` choice → the ``.mat`` variable it reads."""
SEG_MAPPING = "nyu894→40→13 (classMapping40.mat mapClass, class13Mapping.mat labels13), 0→−1"
NUM_RAW_CLASSES = 894

NYU_INTRINSICS: tuple[float, float, float, float] = (518.8579, 519.4696, 325.5824, 253.7362)
"""The NYU Kinect RGB camera's fx, fy, cx, cy at 640×480 pixels."""
NYU_HW: tuple[int, int] = (480, 640)

LABELS13: tuple[int, ...] = (
    12, 5, 6, 1, 4, 9, 10, 12, 13, 6, 8, 6, 13, 10, 6, 13, 6, 7, 7, 5,
    7, 3, 2, 6, 11, 7, 7, 7, 7, 7, 7, 6, 7, 7, 7, 7, 7, 7, 6, 7,
)  # fmt: skip
"""``class13Mapping.mat``'s ``labels13``: 40-class id → 13-class id, both 1-based."""
CLASSES40: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
"""``classMapping40.mat``'s ``className``, in file order (the misspelling is the file's)."""


def is_nyuv2_raw(raw: str | Path) -> bool:
    """Whether ``raw`` looks like a raw NYUv2 folder (it holds the labelled ``.mat``)."""
    return (Path(raw) / MAT_FILE).is_file()


# --------------------------------------------------------------------------------------------
# Meta files (MATLAB v5, read with scipy)


def _loadmat(path: Path, hint: str) -> dict[str, Any]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise DataError(path, f"not found ({hint})")
    try:
        return loadmat(path, simplify_cells=True)
    except NotImplementedError:
        message = "saved as MATLAB v7.3; expected a v5 .mat file as in ankurhanda/nyuv2-meta-data"
        raise DataError(path, message) from None
    except (OSError, ValueError, TypeError, IndexError, MatReadError) as error:
        raise DataError(
            path, f"not a readable MATLAB file ({error or type(error).__name__})"
        ) from None


def _variable(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        found = ", ".join(sorted(k for k in data if not k.startswith("__"))) or "nothing"
        raise DataError(path, f"no variable {key!r} (found: {found})")
    return data[key]


def _integers(value: Any, path: Path, key: str, low: int, high: int) -> np.ndarray:
    """A 1-D integer vector with values in ``low…high``."""
    array = np.atleast_1d(np.asarray(value))
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number) or array.size == 0:
        raise DataError(
            path, f"{key} must be a non-empty numeric vector, found shape {array.shape}"
        )
    if np.any(array != np.round(array)) or array.min() < low or array.max() > high:
        raise DataError(path, f"{key} values must be whole numbers in {low}…{high}")
    return array.astype(np.int64)


def read_class_mapping(raw: Path) -> np.ndarray:
    """Raw label (0…894) → MTAN's 13-class id (−1 = unlabelled), int16, from
    ``classMapping40.mat`` and ``class13Mapping.mat`` in ``raw``."""
    hint = "the 894→40 class mapping of ankurhanda/nyuv2-meta-data"
    path40 = Path(raw) / MAP40_FILE
    map40 = _integers(
        _variable(_loadmat(path40, hint), "mapClass", path40), path40, "mapClass", 1, 40
    )
    path13 = Path(raw) / MAP13_FILE
    struct = _variable(_loadmat(path13, "the 40→13 class mapping"), "classMapping13", path13)
    if not isinstance(struct, dict):
        raise DataError(path13, "classMapping13 must be a struct with labels13 and classNames")
    labels13 = _integers(_variable(struct, "labels13", path13), path13, "labels13", 1, 13)
    if labels13.size != 40:
        raise DataError(path13, f"labels13 must map the 40 classes, found {labels13.size} entries")
    names = [str(name).strip().lower() for name in np.atleast_1d(struct.get("classNames", []))]
    if tuple(names) != NYUV2_CLASSES:
        raise DataError(
            path13, f"classNames must be {', '.join(NYUV2_CLASSES)} (MTAN's order), found {names}"
        )
    table = np.full(map40.size + 1, -1, dtype=np.int16)
    table[1:] = labels13[map40 - 1] - 1
    return table


def read_splits(raw: Path, num_images: int) -> dict[str, np.ndarray]:
    """Our split name → its 1-based image indices from ``splits.mat``: within 1…N, without
    repeats, train and test disjoint."""
    path = Path(raw) / SPLITS_FILE
    data = _loadmat(path, "the standard 795/654 split of ankurhanda/nyuv2-meta-data")
    splits = {
        ours: _integers(_variable(data, key, path), path, key, 1, num_images)
        for ours, key in SPLIT_KEYS.items()
    }
    for ours, key in SPLIT_KEYS.items():
        if np.unique(splits[ours]).size != splits[ours].size:
            raise DataError(path, f"{key} repeats an index")
    shared = np.intersect1d(splits["train"], splits["test"])
    if shared.size:
        raise DataError(path, f"trainNdxs and testNdxs share image {int(shared[0])}")
    return splits


# --------------------------------------------------------------------------------------------
# The labelled .mat (MATLAB v7.3 = HDF5)


def open_labeled(path: Path) -> h5py.File:
    """Open the labelled ``.mat`` read-only; a MATLAB v5 or non-HDF5 file is named as such."""
    if not path.is_file():
        raise DataError(path, "not found (the NYU Depth V2 labelled dataset)")
    if not h5py.is_hdf5(path):
        with path.open("rb") as handle:
            head = handle.read(10)
        what = "a MATLAB v5 file" if head.startswith(b"MATLAB 5.0") else "not HDF5"
        raise DataError(path, f"{what}; the labelled set is a MATLAB v7.3 (HDF5) file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataError(path, f"cannot open ({error})") from None


def check_labeled(
    file: h5py.File, path: Path, depth_key: str, num_raw_classes: int
) -> tuple[int, int, int]:
    """Check the variables the conversion reads; returns ``(N, H, W)``.

    ``num_raw_classes`` is the length of ``mapClass``; when the file's ``names`` list is there
    it must have as many entries, which catches a mapping made for another label set."""
    for key, dtype in (("images", "uint8"), ("labels", "integer"), (depth_key, "floating")):
        if key not in file or not isinstance(file[key], h5py.Dataset):
            raise DataError(path, f"no variable {key!r}")
        kind = file[key].dtype
        ok = kind == np.uint8 if dtype == "uint8" else np.issubdtype(kind, getattr(np, dtype))
        if not ok:
            raise DataError(path, f"{key} must be {dtype}, found {kind}")
    images = file["images"].shape
    if len(images) != 4 or images[1] != 3:
        raise DataError(path, f"images has shape {images}, expected (N, 3, W, H) as h5py sees it")
    n, width, height = images[0], images[2], images[3]
    for key in ("labels", depth_key):
        if file[key].shape != (n, width, height):
            raise DataError(
                path, f"{key} has shape {file[key].shape}, expected {(n, width, height)}"
            )
    if "names" in file and file["names"].size != num_raw_classes:
        raise DataError(
            path,
            f"names lists {file['names'].size} classes but {MAP40_FILE} maps {num_raw_classes}",
        )
    return n, height, width


def _image(file: h5py.File, key: str, k: int, path: Path) -> np.ndarray:
    """Image ``k`` (1-based) of variable ``key``; a damaged file is a :class:`DataError`."""
    try:
        return file[key][k - 1]
    except OSError as error:
        raise DataError(path, f"image {k} (1-based): cannot read {key} ({error})") from None


def normals_from_depth(
    depth: np.ndarray, intrinsics: tuple[float, float, float, float]
) -> np.ndarray:
    """Unit surface normals (H, W, 3) float32 of a depth map in metres, zero where invalid.

    Pixels are back-projected with ``intrinsics`` (fx, fy, cx, cy at the map's resolution); the
    normal is the cross product of the central differences along rows and columns, turned to
    face the camera, in the axes x right, y up, z towards the camera (channel 0 is horizontal as
    in MTAN's files; the signs of their y and z are not verified). A pixel is
    invalid when it or one of its four neighbours has depth ≤ 0. Not bit-identical to the Eigen
    & Fergus normals in MTAN's files, which were fitted differently.
    """
    fx, fy, cx, cy = intrinsics
    z = np.asarray(depth, dtype=np.float64)
    h, w = z.shape
    x = (np.arange(w)[None, :] - cx) * z / fx
    y = (np.arange(h)[:, None] - cy) * z / fy
    points = np.stack([x, y, z], axis=-1)  # camera frame: x right, y down, z forward
    normals = np.cross(np.gradient(points, axis=1), np.gradient(points, axis=0))
    facing_away = np.sum(normals * points, axis=-1) > 0
    normals[facing_away] *= -1
    normals[..., 1:] *= -1  # to y up, z towards the camera
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = np.pad(z > 0, 1, mode="edge")
    valid = (
        valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
    )
    valid &= norm[..., 0] > 0
    out = np.zeros_like(normals)
    out[valid] = normals[valid] / norm[valid]
    return out.astype(np.float32)


def scaled_intrinsics(hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """The NYU intrinsics scaled from 480×640 to ``hw``."""
    fx, fy, cx, cy = NYU_INTRINSICS
    sy, sx = hw[0] / NYU_HW[0], hw[1] / NYU_HW[1]
    return fx * sx, fy * sy, cx * sx, cy * sy


def _external_normals(raw: Path, splits: dict[str, np.ndarray], hw: tuple[int, int]) -> bool:
    """Whether ``normals/`` is supplied; if so, every split image needs a well-formed file."""
    folder = raw / NORMALS_DIR
    if not folder.is_dir():
        return False
    for indices in splits.values():
        for k in indices:
            path = folder / f"{k}.npy"
            if not path.is_file():
                raise DataError(
                    path, f"missing: {NORMALS_DIR}/ must hold <k>.npy for every split image"
                )
            check_field_header(path, "normal", npy_header(path), hw)
    return True


def prepare_nyuv2_raw(
    raw: Path,
    out: Path,
    *,
    size: tuple[int, int] | None = DEFAULT_SIZE,
    depth: str = "inpainted",
    progress: bool = True,
) -> None:
    """Validate the raw NYUv2 folder ``raw`` and write its train/test images atomically to the
    HDF5 file ``out``, in the contract of :func:`roaming.data.dense.prepare_dense`.

    ``size`` (H, W; default 288×384, ``None`` keeps the input size) resizes images with PIL's
    antialiased bilinear filter, labels, depth and normals with nearest neighbour; normals are
    computed (or read) at the input size first. ``depth`` is ``inpainted`` (``depths``, no holes)
    or ``raw`` (``rawDepths``, 0 = missing). Meta files, headers and external normals are checked
    first, pixel values while converting; on any error no output is left.
    """
    raw, out = Path(raw), Path(out)
    if depth not in DEPTH_SOURCES:
        raise ConfigError(f"unknown NYUv2 depth {depth!r} (choose {' or '.join(DEPTH_SOURCES)})")
    check_conversion(raw, out, size)
    table = read_class_mapping(raw)
    mat = raw / MAT_FILE
    depth_key = DEPTH_SOURCES[depth]
    with open_labeled(mat) as file:
        n, height, width = check_labeled(file, mat, depth_key, table.size - 1)
        source_hw = (height, width)
        splits = read_splits(raw, n)
        external = _external_normals(raw, splits, source_hw)
        hw = (int(size[0]), int(size[1])) if size is not None else source_hw
        intrinsics = scaled_intrinsics(source_hw)
        preprocess = {
            "source_format": SOURCE_FORMAT,
            "source_root": raw.name,
            "source_hw": list(source_hw),
            "size": list(hw),
            "interpolation": interpolation(
                hw != source_hw,
                images="bilinear (PIL, antialiased)",
                seg="nearest",
                depth="nearest",
                normals="nearest",
            ),
            "depth_kind": "metric_m",
            "depth_source": depth_key,
            "normals_source": "external" if external else "computed_from_depth",
            **({} if external else {"intrinsics_fx_fy_cx_cy": list(intrinsics)}),
            "seg_mapping": SEG_MAPPING,
            "crop": "none",
            "splits": {ours: f"{SPLITS_FILE}:{key}" for ours, key in SPLIT_KEYS.items()},
        }

        def loader(indices: np.ndarray) -> Callable[[int], dict[str, np.ndarray]]:
            def load(i: int) -> dict[str, np.ndarray]:
                k = int(indices[i])
                where = f"image {k} (1-based)"
                labels = _image(file, "labels", k, mat).T.astype(np.int64)
                if labels.size and int(labels.max()) >= table.size:
                    raise DataError(
                        mat, f"{where}: label {int(labels.max())} exceeds the {table.size - 1} "
                        f"classes of {MAP40_FILE}",
                    )  # fmt: skip
                metres = _image(file, depth_key, k, mat).T.astype(np.float32)
                if not np.all(np.isfinite(metres)) or metres.min(initial=0) < 0:
                    raise DataError(mat, f"{where}: {depth_key} must be finite and ≥ 0")
                if external:
                    path = raw / NORMALS_DIR / f"{k}.npy"
                    normals = load_npy(path)
                    check_normals(path, normals)
                else:
                    normals = normals_from_depth(metres, intrinsics)
                return {
                    "images": resize_image(_image(file, "images", k, mat).transpose(2, 1, 0), hw),
                    "seg": resize_nearest(table[labels], hw),
                    "depth": resize_nearest(metres, hw),
                    "normals": resize_nearest(normals, hw).astype(np.float32),
                }

            return load

        write_dense_h5(
            out,
            raw=raw,
            dataset="nyuv2",
            source_format=SOURCE_FORMAT,
            hw=hw,
            preprocess=preprocess,
            depth_kind="metric_m",
            splits={
                name: H5Split(indices.astype(np.int32), loader(indices))
                for name, indices in splits.items()
            },
            seg_mapping=SEG_MAPPING,
            normals_source="external" if external else "computed_from_depth",
            progress=progress,
        )


# --------------------------------------------------------------------------------------------
# Synthetic fixture

# Fixed per-class colours (uint8 RGB), far enough apart to be learnable through the noise.
_COLOURS = np.random.default_rng(20210204).integers(30, 226, size=(13, 3))
_NOISE = 8
_BED, _BOOKS, _CEILING, _CHAIR, _FLOOR, _PICTURE, _TABLE, _WALL, _WINDOW = (
    0,
    1,
    2,
    3,
    4,
    7,
    9,
    11,
    12,
)
_OBJECTS = (_BED, _CHAIR, _TABLE)
_DECOR = (_PICTURE, _WINDOW, _BOOKS)


def _fixture_map40(rng: np.random.Generator) -> np.ndarray:
    """A synthetic ``mapClass``: 894 raw classes onto 1…40, every 40-class used."""
    values = np.concatenate([np.arange(1, 41), rng.integers(1, 41, size=NUM_RAW_CLASSES - 40)])
    return rng.permutation(values).astype(np.uint8)


def _raw_ids(map40: np.ndarray) -> list[np.ndarray]:
    """For each 13-class id, the raw ids (1…894) that map onto it."""
    c13 = np.asarray(LABELS13)[map40.astype(np.int64) - 1] - 1
    return [np.flatnonzero(c13 == c) + 1 for c in range(13)]


def _room(
    rng: np.random.Generator, h: int, w: int, raw_ids: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One room seen by the NYU camera: RGB uint8, raw labels uint16, depth metres float32 and
    instances uint8, all (H, W). Floor and ceiling are horizontal planes, the wall and the boxes
    face the camera, so normals computed from the depth are exactly up, down and facing."""
    fx, fy, _, cy = scaled_intrinsics((h, w))
    rows = np.arange(h)[:, None] + np.zeros((1, w))
    wall = rng.uniform(4.5, 6.0)
    label = np.full((h, w), _WALL)
    metres = np.full((h, w), wall)
    camera_height = 1.5 * (h - 1 - cy) / fy  # the bottom row sees the floor 1.5 m away
    below = rows > cy
    floor = np.where(below, camera_height * fy / np.maximum(rows - cy, 1e-9), np.inf)
    ceiling_height = rng.uniform(1.0, 1.4)
    above = rows < cy
    ceiling = np.where(above, ceiling_height * fy / np.maximum(cy - rows, 1e-9), np.inf)
    for surface, class_id in ((floor, _FLOOR), (ceiling, _CEILING)):
        nearer = surface < metres
        label[nearer], metres[nearer] = class_id, surface[nearer]
    instances = np.where(label == _WALL, 1, np.where(label == _FLOOR, 2, 3)).astype(np.uint8)
    decor = rng.choice(_DECOR)
    top = int(cy - rng.uniform(0.1, 0.5) * ceiling_height * fy / wall)
    box = slice(max(0, top), max(1, top + h // 8)), slice(*sorted(rng.integers(0, w, size=2)))
    on_wall = np.zeros((h, w), dtype=bool)
    on_wall[box] = True
    on_wall &= label == _WALL
    label[on_wall], instances[on_wall] = decor, 4
    for number, d in enumerate(sorted(rng.uniform(1.8, wall - 0.5, size=rng.integers(1, 4)))[::-1]):
        bottom = int(min(h, cy + camera_height * fy / d))
        top = int(max(0, cy + (camera_height - rng.uniform(0.4, 1.0)) * fy / d))
        span = int(rng.uniform(0.5, 1.5) * fx / d)
        left = int(rng.integers(0, max(1, w - span)))
        label[top:bottom, left : left + span] = rng.choice(_OBJECTS)
        metres[top:bottom, left : left + span] = d
        instances[top:bottom, left : left + span] = 5 + number
    image = np.clip(_COLOURS[label] + rng.integers(-_NOISE, _NOISE + 1, size=(h, w, 3)), 0, 255)
    raw = np.zeros((h, w), dtype=np.uint16)
    for class_id in np.unique(label):
        where = label == class_id
        raw[where] = rng.choice(raw_ids[class_id], size=int(where.sum()))
    rh, rw = int(h * rng.uniform(0.15, 0.4)), int(w * rng.uniform(0.15, 0.4))
    top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    raw[top : top + rh, left : left + rw] = 0  # unlabelled: 2–16% of the image
    instances[raw == 0] = 0
    return image.astype(np.uint8), raw, metres.astype(np.float32), instances


_MATLAB_HEADER = (
    (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 "
        b"HDF5 schema 1.00 ."
    ).ljust(116, b" ")
    + b"\0" * 8
    + b"\x00\x02IM"
)


def _matlab_class(node: h5py.Dataset, name: str) -> h5py.Dataset:
    node.attrs["MATLAB_class"] = np.bytes_(name)
    return node


def _cellstr(file: h5py.File, key: str, strings: list[str]) -> None:
    """A 1×n MATLAB cell of char row vectors: object references into ``#refs#``."""
    refs = file.require_group("#refs#")
    cell = _matlab_class(file.create_dataset(key, (1, len(strings)), dtype=h5py.ref_dtype), "cell")
    for j, text in enumerate(strings):
        chars = np.array([[ord(c)] for c in text], dtype=np.uint16)  # MATLAB 1×L is (L, 1) here
        node = _matlab_class(refs.create_dataset(f"{key}_{j}", data=chars), "char")
        node.attrs["MATLAB_int_decode"] = np.int32(2)
        cell[0, j] = node.ref


def _write_labeled(path: Path, arrays: dict[str, np.ndarray], names: dict[str, list[str]]) -> None:
    """The labelled set as MATLAB v7.3 writes it: HDF5 behind a 512-byte MATLAB header, every
    array with its axes reversed and a ``MATLAB_class`` attribute."""
    classes = {"images": "uint8", "depths": "single", "rawDepths": "single",
               "labels": "uint16", "instances": "uint8", "accelData": "single"}  # fmt: skip
    with h5py.File(path, "w", userblock_size=512) as file:
        for key, array in arrays.items():
            _matlab_class(file.create_dataset(key, data=array), classes[key])
        for key, strings in names.items():
            _cellstr(file, key, strings)
    with path.open("r+b") as handle:
        handle.write(_MATLAB_HEADER)


def write_nyuv2_raw_fixture(
    out: Path,
    *,
    seed: int,
    n_train: int = 8,
    n_test: int = 4,
    height: int = 120,
    width: int = 160,
) -> None:
    """Write a synthetic raw NYUv2 folder into the new (or empty) folder ``out``: the labelled
    ``.mat`` (MATLAB v7.3; real sets are 480×640) and look-alikes of the meta files.

    Each image is a room: ceiling, wall and floor planes, a picture, window or books on the
    wall, 1–3 beds, chairs or tables standing on the floor nearer the camera, and an unlabelled
    rectangle. Raw label ids are drawn among those that a seeded synthetic ``mapClass`` and the
    real ``labels13`` send to the intended class. ``rawDepths`` has ~5% holes. ``splits.mat``
    interleaves the test images among the train ones, as the real file does. The same
    arguments give the same data; the folder appears only once complete.
    """
    from scipy.io import savemat

    out = Path(out)
    if seed < 0:
        raise ConfigError(f"the seed must be ≥ 0, got {seed}")
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"image counts must be ≥ 1, got n_train={n_train}, n_test={n_test}")
    if height < 32 or width < 32:
        raise ConfigError(f"height and width must be at least 32 pixels, got {height}×{width}")
    n = n_train + n_test
    rng = np.random.default_rng(seed)
    map40 = _fixture_map40(rng)
    raw_ids = _raw_ids(map40)
    rooms = [_room(rng, height, width, raw_ids) for _ in range(n)]
    depths = np.stack([room[2] for room in rooms])
    raw_depths = np.where(rng.random(depths.shape) < 0.05, 0, depths).astype(np.float32)
    arrays = {  # h5py order: MATLAB's H×W×[3×]N reversed
        "images": np.stack([room[0] for room in rooms]).transpose(0, 3, 2, 1),
        "depths": depths.transpose(0, 2, 1),
        "rawDepths": raw_depths.transpose(0, 2, 1),
        "labels": np.stack([room[1] for room in rooms]).transpose(0, 2, 1),
        "instances": np.stack([room[3] for room in rooms]).transpose(0, 2, 1),
        "accelData": rng.normal(0, 0.5, size=(4, n)).astype(np.float32),
    }
    names = {
        "names": [f"class_{j:03d}" for j in range(1, NUM_RAW_CLASSES + 1)],
        "scenes": [f"room_{k:04d}" for k in range(1, n + 1)],
        "sceneTypes": ["room"] * n,
    }
    test = np.sort(rng.choice(np.arange(1, n + 1), size=n_test, replace=False))
    train = np.setdiff1d(np.arange(1, n + 1), test)
    cells = np.empty((1, 13), dtype=object)
    cells[0, :] = NYUV2_CLASSES
    names40 = np.empty((1, 40), dtype=object)
    names40[0, :] = CLASSES40
    all_names = np.empty((1, NUM_RAW_CLASSES), dtype=object)
    all_names[0, :] = names["names"]
    with atomic_dir(out) as tmp:
        write_fixture_marker(tmp, "nyuv2", format="raw", seed=seed)
        _write_labeled(tmp / MAT_FILE, arrays, names)
        savemat(
            tmp / SPLITS_FILE,
            {
                "trainNdxs": train[:, None].astype(np.uint16),
                "testNdxs": test[:, None].astype(np.uint16),
            },
        )
        savemat(
            tmp / MAP40_FILE,
            {
                "mapClass": map40[None, :],
                "className": names40,
                "allClassName": all_names,
                "mapToNYUSuperClass": rng.integers(1, 5, size=(1, 40)).astype(np.uint8),
            },
        )
        savemat(
            tmp / MAP13_FILE,
            {
                "classMapping13": {
                    "labels13": np.asarray(LABELS13, dtype=np.uint8)[None, :],
                    "classNames": cells,
                }
            },
        )
