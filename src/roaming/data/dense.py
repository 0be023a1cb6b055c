"""CityScapes and NYUv2 in MTAN's preprocessed ``.npy`` format: a strict reader, a synthetic
fixture and the conversion to one HDF5 file.

MTAN's files are the input of every published Maximum Roaming dense result, so the reader
accepts exactly what those loaders accept and checks what they silently trust: contiguous
indices, one image size, label ids, value ranges. Each problem is a
:class:`~roaming.errors.DataError` naming the file.

The HDF5 file (``format="roaming-h5"``, version 1) has groups ``train`` and ``test`` (MTAN's
``val`` is the standard test split), each holding, in MTAN index order:

- ``images``: uint8 (N, H, W, 3) RGB, ``round(x·255)`` of MTAN's floats in [0, 1];
- ``seg``: int16 (N, H, W), class ids, −1 = ignore;
- ``depth``: float32 (N, H, W), 0 = invalid (CityScapes: MTAN inverse depth; NYUv2: metres);
- ``normals`` (NYUv2 only): float32 (N, H, W, 3), unit vectors, zero vector = invalid;
- ``index``: int32 (N,), the MTAN file index ``i``.

Every image-like array is stored one sample per chunk.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from roaming import __version__
from roaming.atomic import atomic_dir, atomic_h5, require_space
from roaming.data.prepared import (
    FORMAT,
    FORMAT_VERSION,
    Digests,
    create_dataset,
    create_strings,
    source_attrs,
    write_fixture_marker,
)
from roaming.errors import ConfigError, DataError

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "flat", "construction", "object", "nature", "sky", "human", "vehicle",
)  # fmt: skip
"""MTAN's 7 CityScapes categories (``label_7``), index = class id."""

NYUV2_CLASSES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
    "table", "tv", "wall", "window",
)  # fmt: skip
"""MTAN's 13 NYUv2 classes, index = class id."""

DATASETS: tuple[str, ...] = ("cityscapes", "nyuv2")
SPLITS: dict[str, str] = {"train": "train", "test": "val"}
"""Our split name → MTAN's folder name."""

SOURCE_FORMAT = "mtan_npy"

_NORMAL_TOLERANCE = 1e-2  # |‖n‖ − 1| allowed: the real files are float32 after resizing
_FILE_NAME = re.compile(r"(0|[1-9][0-9]*)\.npy")


@dataclass(frozen=True)
class _Spec:
    """What one dataset's MTAN folders hold."""

    classes: tuple[str, ...]
    label_dirs: tuple[str, ...]  # first present wins
    normals: bool
    depth_kind: str


_SPECS = {
    "cityscapes": _Spec(CITYSCAPES_CLASSES, ("label_7", "label"), False, "mtan_inverse"),
    "nyuv2": _Spec(NYUV2_CLASSES, ("label",), True, "metric_m"),
}


def _spec(dataset: str) -> _Spec:
    if dataset not in _SPECS:
        raise ConfigError(f"unknown dense dataset {dataset!r} (choose {' or '.join(DATASETS)})")
    return _SPECS[dataset]


# --------------------------------------------------------------------------------------------
# Reader


@dataclass(frozen=True)
class MtanSplit:
    """The files of one MTAN split: ``files[field][i]`` for fields image, label, depth[, normal]."""

    folder: Path
    files: dict[str, list[Path]]

    def __len__(self) -> int:
        return len(self.files["image"])


def _has_splits(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in SPLITS.values())


def find_mtan_root(raw: str | Path) -> Path:
    """The folder holding ``train/`` and ``val/``: ``raw`` itself or one subfolder such as
    ``low_res/`` (MR's layout). Several candidate subfolders are ambiguous, so they are an error."""
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(raw, "not a folder" if raw.exists() else "folder not found")
    if _has_splits(raw):
        return raw
    candidates = sorted(sub for sub in raw.iterdir() if sub.is_dir() and _has_splits(sub))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(f"{sub.name}/" for sub in candidates)
        message = f"several resolution folders hold train/ and val/ ({names}); pass one of them"
        raise DataError(raw, message)
    raise DataError(raw, "no MTAN data: expected train/ and val/ here or in one subfolder")


def _indexed_files(folder: Path) -> dict[int, Path]:
    """The ``<i>.npy`` files of one field folder, by index."""
    try:
        names = os.listdir(folder)
    except OSError as error:
        raise DataError(folder, f"cannot list ({error.strerror})") from None
    found: dict[int, Path] = {}
    for name in names:
        if match := _FILE_NAME.fullmatch(name):
            found[int(match.group(1))] = folder / name
    return found


def read_mtan_split(folder: Path, dataset: str) -> MtanSplit:
    """List and cross-check the files of one split folder (``train/`` or ``val/``).

    Indices must run 0 … N−1 in every field, because MTAN loaders count the image files to
    get N; the first missing file is named.
    """
    spec = _spec(dataset)
    label_dir = next((name for name in spec.label_dirs if (folder / name).is_dir()), None)
    if label_dir is None:
        wanted = " or ".join(f"{name}/" for name in spec.label_dirs)
        raise DataError(folder, f"no label folder ({wanted})")
    dirs = {"image": "image", "label": label_dir, "depth": "depth"}
    if spec.normals:
        dirs["normal"] = "normal"
    for name in dirs.values():
        if not (folder / name).is_dir():
            raise DataError(folder / name, "folder not found")
    found = {field: _indexed_files(folder / name) for field, name in dirs.items()}
    count = max((max(files, default=-1) for files in found.values()), default=-1) + 1
    if count == 0:
        raise DataError(folder / "image", "no <i>.npy files")
    files: dict[str, list[Path]] = {}
    for field, name in dirs.items():
        for i in range(count):
            if i not in found[field]:
                raise DataError(
                    folder / name / f"{i}.npy",
                    f"missing: indices must run 0…{count - 1} in every field",
                )
        files[field] = [found[field][i] for i in range(count)]
    return MtanSplit(folder, files)


def npy_header(path: Path) -> np.ndarray:
    """Memory-map an ``.npy`` file: its shape and dtype without reading the data."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(path, f"not a readable .npy array ({error})") from None


def check_field_header(
    path: Path, field: str, array: np.ndarray, hw: tuple[int, int] | None
) -> None:
    """Shape and dtype of one field: HWC as MTAN writes it, one H×W for the whole dataset."""
    floating = np.issubdtype(array.dtype, np.floating)
    if field == "label":
        if not (floating or np.issubdtype(array.dtype, np.integer)):
            raise DataError(path, f"labels must be numbers, found dtype {array.dtype}")
    elif not floating:
        raise DataError(path, f"{field} must be float32 or float64, found dtype {array.dtype}")
    shape = array.shape
    channels = {"image": (3,), "label": (None, 1), "depth": (None, 1), "normal": (3,)}[field]
    ok = (len(shape) == 3 and shape[2] in channels) or (len(shape) == 2 and None in channels)
    if not ok:
        want = {"image": "(H, W, 3)", "label": "(H, W)", "depth": "(H, W, 1)"}
        raise DataError(path, f"{field} has shape {shape}, expected {want.get(field, '(H, W, 3)')}")
    if hw is not None and shape[:2] != hw:
        raise DataError(
            path, f"{field} is {shape[0]}×{shape[1]} but the first image is {hw[0]}×{hw[1]}"
        )


def check_headers(splits: dict[str, MtanSplit]) -> tuple[int, int]:
    """Check every file's shape and dtype before any conversion; returns the common (H, W)."""
    hw: tuple[int, int] | None = None
    for split in splits.values():
        for field, paths in split.files.items():
            for path in paths:
                array = npy_header(path)
                check_field_header(path, field, array, hw)
                if hw is None:
                    hw = (int(array.shape[0]), int(array.shape[1]))
    assert hw is not None
    return hw


def load_npy(path: Path) -> np.ndarray:
    """Read an ``.npy`` file (no pickles); a bad file is a :class:`DataError` naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(path, f"not a readable .npy array ({error})") from None


def check_normals(path: Path, normals: np.ndarray) -> None:
    """Normals (H, W, 3) must be finite and unit vectors (up to float32 resizing error) or zero."""
    if not np.all(np.isfinite(normals)):
        raise DataError(path, "normal holds NaN or infinite values")
    norm = np.linalg.norm(normals.astype(np.float64), axis=-1)
    bad = (norm != 0) & (np.abs(norm - 1) > _NORMAL_TOLERANCE)
    if np.any(bad):
        raise DataError(
            path, f"normals must be unit vectors or zero, found length {norm[bad][0]:g}"
        )


def load_sample(split: MtanSplit, i: int, num_classes: int) -> dict[str, np.ndarray]:
    """Read and validate sample ``i``: image float (H,W,3) in [0,1], label int16 (H,W) in
    {−1} ∪ [0, C), depth float32 (H,W) ≥ 0, normal float32 (H,W,3) unit or zero."""
    out: dict[str, np.ndarray] = {}
    for field, paths in split.files.items():
        path = paths[i]
        array = load_npy(path)
        if not np.all(np.isfinite(array)):
            raise DataError(path, f"{field} holds NaN or infinite values")
        if field == "image":
            low, high = float(array.min()), float(array.max())
            if low < 0 or high > 1:
                raise DataError(path, f"image values must lie in [0, 1], found [{low}, {high}]")
        elif field == "label":
            array = array.reshape(array.shape[:2])
            if np.any(array != np.round(array)):
                raise DataError(path, "labels must be whole numbers")
            bad = (array != -1) & ((array < 0) | (array >= num_classes))
            if np.any(bad):
                value = array[bad].flat[0]
                raise DataError(
                    path, f"label {value:g} is outside {{-1}} ∪ [0, {num_classes}) (−1 = ignore)"
                )
            array = array.astype(np.int16)
        elif field == "depth":
            array = array.reshape(array.shape[:2])
            if np.any(array < 0):
                raise DataError(path, f"depth must be ≥ 0 (0 = invalid), found {array.min():g}")
        elif field == "normal":
            check_normals(path, array)
        out[field] = array
    return out


# --------------------------------------------------------------------------------------------
# Conversion


def resize_nearest(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes (pixel centres), so label ids, invalid
    zeros and unit normals survive unchanged."""
    rows, cols = (
        np.minimum(((np.arange(out) + 0.5) * size / out).astype(int), size - 1)
        for out, size in zip(hw, array.shape[:2], strict=True)
    )
    return array[rows[:, None], cols[None, :]]


def resize_image(pixels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 image resized to ``hw`` with PIL's (antialiased) bilinear filter."""
    if pixels.shape[:2] == hw:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))


def _to_uint8(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``round(x·255)`` as uint8, resized if asked."""
    return resize_image(np.round(image.astype(np.float64) * 255).astype(np.uint8), hw)


def _create(group: h5py.Group, key: str, shape: tuple[int, ...], dtype: type) -> h5py.Dataset:
    """An image-like dataset, one sample per chunk (``maxshape`` keeps the chunk shape legal
    even for an empty split)."""
    return create_dataset(
        group, key, shape=shape, maxshape=(None, *shape[1:]), chunks=(1, *shape[1:]), dtype=dtype
    )


def check_conversion(raw: Path, out: Path, size: tuple[int, int] | None) -> None:
    """The checks every dense conversion starts with: ``size`` is (H, W) or None, ``out`` is
    a file path and ``raw`` a folder."""
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ConfigError(f"size must be (height, width) in positive pixels, got {size}")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give the path of the HDF5 file to write")
    if not raw.is_dir():
        raise DataError(raw, "not a folder" if raw.exists() else "folder not found")


def interpolation(resized: bool, **methods: str) -> dict[str, str]:
    """The ``preprocess`` record of how each field was resized: its method, or ``none``."""
    return {field: method if resized else "none" for field, method in methods.items()}


def prepare_dense(
    raw: Path,
    out: Path,
    *,
    dataset: str,
    size: tuple[int, int] | None = None,
    progress: bool = True,
) -> None:
    """Validate MTAN files under ``raw`` and write them atomically to the HDF5 file ``out``.

    Shapes and dtypes of all files are checked first (headers only), values while converting
    one sample at a time, so memory stays bounded. ``size`` (H, W) resizes: images bilinear,
    labels, depth and normals nearest. On any error no output file is left.
    """
    raw, out = Path(raw), Path(out)
    spec = _spec(dataset)
    check_conversion(raw, out, size)
    root = find_mtan_root(raw)
    splits = {ours: read_mtan_split(root / theirs, dataset) for ours, theirs in SPLITS.items()}
    source_hw = check_headers(splits)
    hw = (int(size[0]), int(size[1])) if size is not None else source_hw
    num_classes = len(spec.classes)
    preprocess = {
        "source_format": SOURCE_FORMAT,
        "source_root": root.name,
        "label_folder": splits["train"].files["label"][0].parent.name,
        "source_hw": list(source_hw),
        "size": list(hw),
        "interpolation": interpolation(
            hw != source_hw,
            images="bilinear (PIL, antialiased) on round(x*255)",
            seg="nearest",
            depth="nearest",
            **({"normals": "nearest"} if spec.normals else {}),
        ),
        "depth_kind": spec.depth_kind,
        "splits": {ours: theirs for ours, theirs in SPLITS.items()},
    }

    def loader(split: MtanSplit) -> Callable[[int], dict[str, np.ndarray]]:
        def load(i: int) -> dict[str, np.ndarray]:
            sample = load_sample(split, i, num_classes)
            arrays = {
                "images": _to_uint8(sample["image"], hw),
                "seg": resize_nearest(sample["label"], hw),
                "depth": resize_nearest(sample["depth"], hw).astype(np.float32),
            }
            if spec.normals:
                arrays["normals"] = resize_nearest(sample["normal"], hw).astype(np.float32)
            return arrays

        return load

    write_dense_h5(
        out,
        raw=raw,
        dataset=dataset,
        source_format=SOURCE_FORMAT,
        hw=hw,
        preprocess=preprocess,
        depth_kind=spec.depth_kind,
        splits={
            name: H5Split(np.arange(len(split), dtype=np.int32), loader(split))
            for name, split in splits.items()
        },
        progress=progress,
    )


@dataclass(frozen=True)
class H5Split:
    """One split to write: its ``index`` (int32, one per sample) and ``load(i)``, which returns
    sample ``i`` already at the output size as ``images`` uint8 (H,W,3), ``seg`` int16 (H,W),
    ``depth`` float32 (H,W) and, for NYUv2, ``normals`` float32 (H,W,3). ``names`` optionally
    gives each sample's source name (stored as the ``name`` dataset)."""

    index: np.ndarray
    load: Callable[[int], dict[str, np.ndarray]]
    names: tuple[str, ...] | None = None


def write_dense_h5(
    out: Path,
    *,
    raw: Path,
    dataset: str,
    source_format: str,
    hw: tuple[int, int],
    preprocess: dict[str, Any],
    depth_kind: str,
    splits: dict[str, H5Split],
    seg_mapping: str | None = None,
    normals_source: str = "mtan",
    progress: bool = True,
) -> None:
    """Write the ``roaming-h5`` file ``out`` atomically from already validated splits; an error
    raised by a split's ``load`` leaves no output. Shared by every dense reader; ``raw`` is the
    folder the data came from (its provenance: synthetic fixture or real release).

    ``normals_source`` (NYUv2) records where the normals come from: ``mtan``, ``external`` or
    ``computed_from_depth``."""
    spec = _spec(dataset)
    num_classes = len(spec.classes)
    total = sum(len(split.index) for split in splits.values())
    provenance = source_attrs(raw)
    sample_bytes = hw[0] * hw[1] * (3 + 2 + 4 + (12 if spec.normals else 0))
    with (
        atomic_h5(out, total * sample_bytes, libver="latest") as file,
        tqdm(total=total, unit="img", desc=dataset, disable=not progress) as bar,
    ):
        file.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "dataset": dataset,
                "source_format": source_format,
                "class_names": json.dumps(list(spec.classes)),
                "image_hw": list(hw),
                "preprocess": json.dumps(preprocess),
                "created_by": f"roaming {__version__}",
                **provenance,
            }
        )
        digests = Digests()
        for name, split in splits.items():
            n = len(split.index)
            group = file.create_group(name)

            images = _create(group, "images", (n, *hw, 3), np.uint8)
            seg = _create(group, "seg", (n, *hw), np.int16)
            seg.attrs.update(
                {
                    "num_classes": num_classes,
                    "class_names": json.dumps(list(spec.classes)),
                    "ignore_index": -1,
                }
            )
            if seg_mapping is not None:
                seg.attrs["mapping"] = seg_mapping
            depth = _create(group, "depth", (n, *hw), np.float32)
            depth.attrs.update({"kind": depth_kind, "invalid_value": 0.0})
            normals = _create(group, "normals", (n, *hw, 3), np.float32) if spec.normals else None
            if normals is not None:
                normals.attrs["source"] = normals_source
            index = np.asarray(split.index, dtype=np.int32)
            digests.update(create_dataset(group, "index", data=index), index)
            if split.names is not None:
                names = create_strings(group, "name", list(split.names))
                digests.update(names, list(split.names))
            targets = {"images": images, "seg": seg, "depth": depth}
            if normals is not None:
                targets["normals"] = normals
            for i in range(n):
                require_space(out, sample_bytes)  # the disk may fill meanwhile
                sample = split.load(i)
                for key, target in targets.items():
                    array = np.ascontiguousarray(sample[key])
                    target[i] = array
                    digests.update(target, array.astype(target.dtype, copy=False))
                bar.update(1)
        # Checksums of everything written: runs record the fingerprint and start over when
        # their data changed; every read verifies the checksums.
        digests.finish(file)


# --------------------------------------------------------------------------------------------
# Synthetic fixture

# Fixed per-class colours (RGB in [0, 1]), far enough apart that the class is readable from
# the colour despite the noise: this is what makes the fixture learnable.
_PALETTE = np.random.default_rng(20210202).uniform(0.1, 0.9, size=(16, 3))
_NOISE = 0.03
# CityScapes inverse depth per class (sky is 0 = invalid, as in the real data).
_CITY_DEPTH = np.array([0.30, 0.08, 0.15, 0.10, 0.0, 0.20, 0.25])
# NYUv2 metres per class.
_NYU_DEPTH = np.array([2.0, 2.5, 3.5, 2.2, 1.5, 3.0, 2.4, 3.8, 2.6, 2.1, 3.2, 4.0, 4.2])
_NYU_FLOOR, _NYU_WALL, _NYU_CEILING = 4, 11, 2


def _nyu_normal_table() -> np.ndarray:
    """One unit normal per NYUv2 class: floor up, ceiling down, wall facing, others tilted."""
    rng = np.random.default_rng(13)
    table = rng.normal(size=(13, 3)) + np.array([0.0, 0.0, 2.0])
    table[_NYU_FLOOR] = (0, 1, 0)
    table[_NYU_CEILING] = (0, -1, 0)
    table[_NYU_WALL] = (0, 0, 1)
    return table / np.linalg.norm(table, axis=1, keepdims=True)


_NYU_NORMALS = _nyu_normal_table()


def _rect(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> tuple[slice, slice]:
    """A random axis-aligned rectangle whose sides are ``lo``–``hi`` of the image's."""
    rh = max(1, int(h * rng.uniform(lo, hi)))
    rw = max(1, int(w * rng.uniform(lo, hi)))
    top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    return slice(top, top + rh), slice(left, left + rw)


def _scene(rng: np.random.Generator, dataset: str, h: int, w: int) -> dict[str, np.ndarray]:
    """One image and its targets, every target a deterministic function of the drawn classes."""
    num_classes = len(_SPECS[dataset].classes)
    label = np.empty((h, w), dtype=np.int64)
    horizon = int(h * rng.uniform(0.35, 0.6))
    if dataset == "cityscapes":
        label[:horizon], label[horizon:] = 4, 0  # sky above, road below
        others = [c for c in range(num_classes) if c not in (0, 4)]
    else:
        label[:horizon], label[horizon:] = _NYU_WALL, _NYU_FLOOR
        label[: max(1, horizon // 4)] = _NYU_CEILING
        others = [c for c in range(num_classes) if c not in (_NYU_WALL, _NYU_FLOOR)]
    for _ in range(int(rng.integers(2, 5))):
        label[_rect(rng, h, w, 0.15, 0.45)] = rng.choice(others)
    image = _PALETTE[label] + rng.uniform(-_NOISE, _NOISE, size=(h, w, 3))
    ignore = _rect(rng, h, w, 0.05, 0.15)
    label[ignore] = -1
    image[ignore] = 0.02  # unlabelled pixels are dark, whatever lies under them
    image = np.round(np.clip(image, 0, 1) * 255) / 255  # multiples of 1/255, like MTAN's files
    ramp = np.linspace(0, 1, h)[:, None]  # a smooth vertical gradient on top of the class value
    known = np.maximum(label, 0)
    if dataset == "cityscapes":
        depth = np.minimum(_CITY_DEPTH[known] * (1 + 0.5 * ramp), 0.49)
        depth[label == 4] = 0.0
    else:
        depth = _NYU_DEPTH[known] * (1.2 - 0.4 * ramp)
    depth[_rect(rng, h, w, 0.05, 0.12)] = 0.0  # a hole of invalid depth
    depth[rng.random((h, w)) < 0.02] = 0.0
    sample = {
        "image": image.astype(np.float32),
        "label": label.astype(np.float32),
        "depth": depth[..., None].astype(np.float32),
    }
    if dataset == "nyuv2":
        normal = _NYU_NORMALS[known].copy()
        normal[depth == 0] = 0.0  # consistent masks, as in MTAN's files
        sample["normal"] = normal.astype(np.float32)
    return sample


def write_dense_fixture(
    out: Path,
    *,
    dataset: str,
    seed: int,
    n_train: int = 48,
    n_test: int = 16,
    height: int = 32,
    width: int = 64,
) -> None:
    """Write a synthetic MTAN-format CityScapes or NYUv2 into the new (or empty) folder ``out``.

    Each image is a few axis-aligned regions; a region's colour, depth and normal are fixed
    functions of its class, so a small network learns them. CityScapes gets ``label_7`` and
    inverse depth in [0, 0.49] (0 on sky and holes); NYUv2 ``label``, depth in metres and
    normals (zero where depth is 0). The same arguments give identical files; the folder
    appears only once complete (written under a temporary sibling name, then renamed).
    """
    out = Path(out)
    spec = _spec(dataset)
    if seed < 0:
        raise ConfigError(f"the seed must be ≥ 0, got {seed}")
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"image counts must be ≥ 1, got n_train={n_train}, n_test={n_test}")
    if height < 32 or width < 32 or height % 32 or width % 32:
        raise ConfigError(
            f"height and width must be positive multiples of 32 (SegNet pools 5 times), "
            f"got {height}×{width}"
        )
    label_dir = spec.label_dirs[0]
    dirs = {"image": "image", "label": label_dir, "depth": "depth"}
    if spec.normals:
        dirs["normal"] = "normal"
    with atomic_dir(out) as tmp:
        write_fixture_marker(tmp, dataset, format="mtan", seed=seed)
        rngs = np.random.default_rng(seed).spawn(len(SPLITS))
        for rng, (theirs, count) in zip(rngs, (("train", n_train), ("val", n_test)), strict=True):
            for name in dirs.values():
                (tmp / theirs / name).mkdir(parents=True)
            for i in range(count):
                for field, array in _scene(rng, dataset, height, width).items():
                    np.save(tmp / theirs / dirs[field] / f"{i}.npy", array)
