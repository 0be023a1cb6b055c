"""Raw CityScapes (``leftImg8bit/``, ``gtFine/``, ``disparity/``, ``camera/``): a strict reader,
the conversion to the same ``roaming-h5`` file as the MTAN reader, and a synthetic fixture.

Frames are matched across the four folders by ``<city>/<city>_<seq>_<frame>`` and read in sorted
order; CityScapes ``train`` becomes our ``train`` and ``val`` our ``test`` (as MTAN does; the
official test split has no public labels). Labels go label id → trainId (19 classes) → MTAN's
7 categories (``categoryId − 1`` of the trainId's label), trainId 255 → −1 (ignore). Depth is
``p / 65535`` of the 16-bit disparity PNG (MTAN's convention, ``mtan_inverse``) or metric
``baseline·fx / d`` with ``d = (p − 1) / 256`` pixels (``metric_m``); ``p = 0`` (and ``d = 0``)
is invalid, stored as 0. Each problem is a :class:`~roaming.errors.DataError` naming the file.

The label table is that of cityscapesScripts' ``helpers/labels.py`` (MIT licence,
Copyright (c) 2016 Marius Cordts).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from roaming.atomic import atomic_dir
from roaming.data.dense import (
    H5Split,
    check_conversion,
    interpolation,
    resize_image,
    resize_nearest,
    write_dense_h5,
)
from roaming.data.prepared import write_fixture_marker
from roaming.errors import ConfigError, DataError

SOURCE_FORMAT = "cityscapes_raw"
FOLDERS: tuple[str, ...] = ("leftImg8bit", "gtFine", "disparity", "camera")
SPLITS: dict[str, str] = {"train": "train", "test": "val"}
"""Our split name → the CityScapes split folder."""
DEFAULT_SIZE: tuple[int, int] = (128, 256)
"""Output (H, W) by default: MTAN's low-resolution CityScapes."""
DEPTH_KINDS: tuple[str, ...] = ("mtan_inverse", "metric_m")
SEG_MAPPING = "cityscapes labelId→trainId→category (categoryId−1), trainId 255→−1"

_SUFFIX = {
    "leftImg8bit": "_leftImg8bit.png",
    "gtFine": "_gtFine_labelIds.png",
    "disparity": "_disparity.png",
    "camera": "_camera.json",
}

# label id → (trainId, categoryId), ids 0…33 (licence plate, id −1, is never drawn).
_LABELS: tuple[tuple[int, int], ...] = (
    (255, 0), (255, 0), (255, 0), (255, 0), (255, 0), (255, 0), (255, 0),  # 0–6 void
    (0, 1), (1, 1), (255, 1), (255, 1),  # 7 road, 8 sidewalk, 9 parking, 10 rail track
    (2, 2), (3, 2), (4, 2), (255, 2), (255, 2), (255, 2),  # 11 building … 16 tunnel
    (5, 3), (255, 3), (6, 3), (7, 3),  # 17 pole, 18 polegroup, 19 light, 20 sign
    (8, 4), (9, 4), (10, 5),  # 21 vegetation, 22 terrain, 23 sky
    (11, 6), (12, 6),  # 24 person, 25 rider
    (13, 7), (14, 7), (15, 7), (255, 7), (255, 7), (16, 7), (17, 7), (18, 7),  # 26 car … 33
)  # fmt: skip
NUM_LABEL_IDS = len(_LABELS)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Label id → trainId (−1 ignore) and label id → 7-class category (−1 ignore)."""
    train = np.array([t if t != 255 else -1 for t, _ in _LABELS], dtype=np.int16)
    category = np.full(NUM_LABEL_IDS, -1, dtype=np.int16)
    for label_id, (train_id, category_id) in enumerate(_LABELS):
        if train_id != 255:
            category[label_id] = category_id - 1
    return train, category


LABEL_TO_TRAIN, LABEL_TO_CATEGORY = _tables()


# --------------------------------------------------------------------------------------------
# Reader


@dataclass(frozen=True)
class Frame:
    """The four files of one frame; ``name`` is ``<city>_<seq>_<frame>``."""

    name: str
    image: Path
    label: Path
    disparity: Path
    camera: Path


def is_cityscapes_raw(raw: str | Path) -> bool:
    """Whether ``raw`` looks like a raw CityScapes root (it has ``leftImg8bit/``)."""
    return (Path(raw) / "leftImg8bit").is_dir()


def _list(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as error:
        raise DataError(folder, f"cannot list ({error.strerror})") from None


def _stems(root: Path, kind: str, split: str) -> dict[tuple[str, str], Path]:
    """``(city, stem) → file`` for one folder kind of one split."""
    base = root / kind / split
    if not base.is_dir():
        raise DataError(base, "folder not found")
    found: dict[tuple[str, str], Path] = {}
    suffix = _SUFFIX[kind]
    for city in _list(base):
        if not (base / city).is_dir():
            continue
        for name in _list(base / city):
            if name.endswith(suffix):
                found[(city, name[: -len(suffix)])] = base / city / name
    return found


def read_cityscapes_split(root: Path, split: str) -> list[Frame]:
    """The frames of one CityScapes split (``train`` or ``val``), sorted by city and stem.

    Every image needs its labelIds, disparity and camera files, and every one of those an
    image; the first missing counterpart is named.
    """
    root = Path(root)
    found = {kind: _stems(root, kind, split) for kind in FOLDERS}
    images = found["leftImg8bit"]
    if not images:
        raise DataError(root / "leftImg8bit" / split, f"no <city>/*{_SUFFIX['leftImg8bit']} files")
    for kind in FOLDERS[1:]:
        for key in sorted(images.keys() - found[kind].keys()):
            city, stem = key
            path = root / kind / split / city / f"{stem}{_SUFFIX[kind]}"
            raise DataError(path, f"missing: the counterpart of {images[key]}")
        for key in sorted(found[kind].keys() - images.keys()):
            raise DataError(found[kind][key], "has no image in leftImg8bit/ (missing counterpart)")
    return [
        Frame(key[1], images[key], *(found[kind][key] for kind in FOLDERS[1:]))
        for key in sorted(images)
    ]


def _open(path: Path, modes: tuple[str, ...], what: str) -> Image.Image:
    """Open a PNG lazily (header only) and check its mode."""
    try:
        image = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(path, f"not a readable PNG ({error})") from None
    if image.format != "PNG":
        raise DataError(path, f"not a PNG (found {image.format})")
    if image.mode not in modes:
        raise DataError(path, f"{what} must be mode {' or '.join(modes)}, found {image.mode}")
    return image


_IMAGE_MODES = ("RGB",)
_LABEL_MODES = ("L", "P")
_DISPARITY_MODES = ("I;16", "I;16B", "I")


def read_camera(path: Path) -> tuple[float, float]:
    """``(baseline, fx)`` from a camera JSON, both positive."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values = (float(data["extrinsic"]["baseline"]), float(data["intrinsic"]["fx"]))
    except OSError as error:
        raise DataError(path, f"cannot read ({error.strerror})") from None
    except (ValueError, KeyError, TypeError) as error:
        message = f"not a camera JSON with extrinsic.baseline and intrinsic.fx ({error!r})"
        raise DataError(path, message) from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise DataError(path, f"baseline and fx must be positive, found {values}")
    return values


def check_frames(frames: dict[str, list[Frame]]) -> tuple[int, int]:
    """Check every PNG's header and every camera file before any conversion; returns the common
    (H, W) of all frames."""
    hw: tuple[int, int] | None = None
    for split in frames.values():
        for frame in split:
            for path, modes, what in (
                (frame.image, _IMAGE_MODES, "the image"),
                (frame.label, _LABEL_MODES, "labelIds"),
                (frame.disparity, _DISPARITY_MODES, "the disparity"),
            ):
                with _open(path, modes, what) as image:
                    size = (image.height, image.width)
                if hw is None:
                    hw = size
                elif size != hw:
                    message = f"is {size[0]}×{size[1]} but the first image is {hw[0]}×{hw[1]}"
                    raise DataError(path, message)
            read_camera(frame.camera)
    assert hw is not None
    return hw


def _pixels(path: Path, modes: tuple[str, ...], what: str) -> np.ndarray:
    with _open(path, modes, what) as image:
        try:
            return np.asarray(image)
        except (OSError, ValueError, SyntaxError) as error:
            raise DataError(path, f"not a readable PNG ({error})") from None


def load_frame(frame: Frame) -> dict[str, np.ndarray]:
    """Read and validate one frame: ``image`` uint8 (H,W,3), ``label`` label ids int64 (H,W)
    in 0…33, ``disparity`` raw PNG values int64 (H,W), ``camera`` (baseline, fx)."""
    image = _pixels(frame.image, _IMAGE_MODES, "the image")
    label = _pixels(frame.label, _LABEL_MODES, "labelIds").astype(np.int64)
    if label.size and int(label.max()) >= NUM_LABEL_IDS:
        unknown = int(label[label >= NUM_LABEL_IDS].flat[0])
        raise DataError(frame.label, f"unknown label id {unknown} (CityScapes ids are 0…33)")
    disparity = _pixels(frame.disparity, _DISPARITY_MODES, "the disparity").astype(np.int64)
    if disparity.size and (disparity.min() < 0 or disparity.max() > 65535):
        raise DataError(frame.disparity, "disparity values must lie in 0…65535")
    return {
        "image": image,
        "label": label,
        "disparity": disparity,
        "camera": np.array(read_camera(frame.camera)),
    }


def disparity_to_depth(raw: np.ndarray, kind: str, baseline: float, fx: float) -> np.ndarray:
    """Depth float32 from raw 16-bit disparity values, 0 where invalid.

    ``mtan_inverse``: ``p / 65535``; ``metric_m``: ``baseline·fx / ((p − 1) / 256)`` metres for
    ``p > 1`` (``p = 1`` is disparity 0, infinitely far, so invalid too)."""
    raw = np.asarray(raw, dtype=np.float64)
    if kind == "mtan_inverse":
        return (raw / 65535).astype(np.float32)
    if kind == "metric_m":
        d = (raw - 1) / 256
        depth = np.zeros_like(d)
        valid = raw > 1
        depth[valid] = baseline * fx / d[valid]
        return depth.astype(np.float32)
    raise ConfigError(f"unknown depth kind {kind!r} (choose {' or '.join(DEPTH_KINDS)})")


def prepare_cityscapes_raw(
    raw: Path,
    out: Path,
    *,
    size: tuple[int, int] | None = DEFAULT_SIZE,
    depth: str = "mtan_inverse",
    progress: bool = True,
) -> None:
    """Validate raw CityScapes under ``raw`` and write its train/val frames atomically to the
    HDF5 file ``out``, in the same contract as :func:`roaming.data.dense.prepare_dense`.

    ``size`` (H, W; default 128×256, ``None`` keeps the input size) resizes images with PIL's
    antialiased bilinear filter, labels and disparity with nearest neighbour. ``depth`` is
    ``mtan_inverse`` (``p/65535``, MTAN's convention) or ``metric_m``. Headers and camera
    files are all checked first, pixel values while converting; on any error no output is left.
    """
    raw, out = Path(raw), Path(out)
    if depth not in DEPTH_KINDS:
        raise ConfigError(f"unknown depth kind {depth!r} (choose {' or '.join(DEPTH_KINDS)})")
    check_conversion(raw, out, size)
    for kind in FOLDERS:
        if not (raw / kind).is_dir():
            raise DataError(raw / kind, "folder not found (raw CityScapes needs all of "
                            f"{', '.join(f'{k}/' for k in FOLDERS)})")  # fmt: skip
    frames = {ours: read_cityscapes_split(raw, theirs) for ours, theirs in SPLITS.items()}
    source_hw = check_frames(frames)
    hw = (int(size[0]), int(size[1])) if size is not None else source_hw
    preprocess = {
        "source_format": SOURCE_FORMAT,
        "source_root": raw.name,
        "label_folder": "gtFine (labelIds)",
        "source_hw": list(source_hw),
        "size": list(hw),
        "interpolation": interpolation(
            hw != source_hw,
            images="bilinear (PIL, antialiased)",
            seg="nearest",
            depth="nearest (on raw disparity)",
        ),
        "depth_kind": depth,
        "depth_formula": "p/65535" if depth == "mtan_inverse" else "baseline*fx/((p-1)/256)",
        "seg_mapping": SEG_MAPPING,
        "splits": dict(SPLITS),
    }

    def loader(split: list[Frame]) -> Callable[[int], dict[str, np.ndarray]]:
        def load(i: int) -> dict[str, np.ndarray]:
            sample = load_frame(split[i])
            baseline, fx = (float(v) for v in sample["camera"])
            label = resize_nearest(sample["label"], hw)
            disparity = resize_nearest(sample["disparity"], hw)
            return {
                "images": resize_image(sample["image"], hw),
                "seg": LABEL_TO_CATEGORY[label],
                "depth": disparity_to_depth(disparity, depth, baseline, fx),
            }

        return load

    write_dense_h5(
        out,
        raw=raw,
        dataset="cityscapes",
        source_format=SOURCE_FORMAT,
        hw=hw,
        preprocess=preprocess,
        depth_kind=depth,
        splits={
            name: H5Split(
                np.arange(len(split), dtype=np.int32),
                loader(split),
                tuple(frame.name for frame in split),
            )
            for name, split in frames.items()
        },
        seg_mapping=SEG_MAPPING,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# Synthetic fixture

_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}


# Fixed colour per label id (uint8 RGB): its category's colour (void: dark) plus a small per-id
# offset, categories far enough apart to be learnable through the noise.
def _colours() -> np.ndarray:
    rng = np.random.default_rng(20210203)
    category = np.vstack([rng.integers(40, 216, size=(7, 3)), [[12, 12, 12]]])
    return category[LABEL_TO_CATEGORY] + rng.integers(-10, 11, size=(NUM_LABEL_IDS, 3))


_COLOURS = _colours()
_NOISE = 8
# Camera at 2048×1024; scaled to the fixture's resolution.
_CAMERA = {
    "extrinsic": {
        "baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195,
        "z": 1.3,
    },
    "intrinsic": {"fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.137},
}  # fmt: skip
# Metric depth (m) of the constant-depth objects.
FIXTURE_DEPTH_M = {11: 30.0, 21: 20.0, 17: 15.0, 26: 12.0, 24: 8.0}


def _camera(height: int, width: int) -> dict:
    intrinsic = dict(_CAMERA["intrinsic"])
    intrinsic["fx"] *= width / 2048
    intrinsic["u0"] *= width / 2048
    intrinsic["fy"] *= height / 1024
    intrinsic["v0"] *= height / 1024
    return {"extrinsic": dict(_CAMERA["extrinsic"]), "intrinsic": intrinsic}


def _box(rng: np.random.Generator, h: int, w: int, top: tuple[float, float], hh: float,
         ww: float) -> tuple[slice, slice]:  # fmt: skip
    rh, rw = max(2, int(h * hh)), max(2, int(w * ww))
    y = int(rng.uniform(*top) * h)
    y = min(max(0, y), h - rh)
    x = int(rng.integers(0, w - rw + 1))
    return slice(y, y + rh), slice(x, x + rw)


def _street(
    rng: np.random.Generator, h: int, w: int, test: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame: RGB uint8, label ids uint8 and raw disparity uint16."""
    camera = _camera(h, w)
    bf = camera["extrinsic"]["baseline"] * camera["intrinsic"]["fx"]
    metric = np.zeros((h, w))  # 0 = no disparity
    label = np.full((h, w), 23, dtype=np.uint8)  # sky
    horizon = int(h * rng.uniform(0.35, 0.5))
    side = int(w * rng.uniform(0.15, 0.3))
    band = slice(int(h * 0.15), horizon)
    label[band, :side], metric[band, :side] = 11, FIXTURE_DEPTH_M[11]  # building left
    label[band, w - side :], metric[band, w - side :] = 21, FIXTURE_DEPTH_M[21]  # vegetation right
    rows = np.arange(horizon, h)
    ground = 40.0 - 35.0 * (rows - horizon) / max(1, h - 1 - horizon)  # 40 m → 5 m at the bottom
    label[horizon:], metric[horizon:] = 7, ground[:, None]  # road
    strip = max(2, w // 10)
    label[horizon:, :strip] = 8  # sidewalks keep the ground-plane depth
    label[horizon:, w - strip :] = 8
    pole = int(rng.integers(side, w - side - 2))
    label[band.start : h - h // 4, pole : pole + 2] = 17
    metric[band.start : h - h // 4, pole : pole + 2] = FIXTURE_DEPTH_M[17]
    objects = [26] * int(rng.integers(1, 3)) + [24]
    for label_id in objects:
        box = _box(rng, h, w, (0.45, 0.7), 0.2 if label_id == 26 else 0.25, 0.2 if label_id == 26
                   else 0.06)  # fmt: skip
        label[box], metric[box] = label_id, FIXTURE_DEPTH_M[label_id]
    void = _box(rng, h, w, (0.5, 0.9), 0.06, 0.06)
    label[void] = 4  # static
    ego = max(1, h // 16)
    label[h - ego :] = 1  # ego vehicle
    metric[h - ego :] = 0.0
    noise = rng.integers(-_NOISE, _NOISE + 1, size=(h, w, 3))
    image = np.clip(_COLOURS[label] + noise, 0, 255).astype(np.uint8)
    disparity = np.zeros((h, w), dtype=np.uint16)
    valid = metric > 0
    disparity[valid] = np.round(bf / metric[valid] * 256).astype(np.uint16) + 1
    disparity[rng.random((h, w)) < 0.03] = 0  # holes
    if test:  # the official test gtFine holds only void annotations
        label = np.zeros((h, w), dtype=np.uint8)
        label[h - ego :] = 1
        label[:1], label[:, :1] = 2, 3
    return image, label, disparity


def write_cityscapes_raw_fixture(
    out: Path,
    *,
    seed: int,
    frames_per_city: int = 2,
    height: int = 64,
    width: int = 128,
) -> None:
    """Write a synthetic raw CityScapes into the new (or empty) folder ``out``.

    Cities: train ``aachen``, ``bochum``; val ``frankfurt``; test ``berlin``, each with
    ``frames_per_city`` frames ``<city>_<seq:06d>_000019``. Per frame: an RGB
    ``leftImg8bit`` PNG (label colour plus noise), a ``gtFine_labelIds`` PNG (sky, building,
    vegetation, road with sidewalks, a pole, cars, a person, a void box, an ego-vehicle strip),
    a 16-bit ``disparity`` PNG (``p = round(d·256) + 1`` with ``d = baseline·fx / depth``; sky,
    ego vehicle and ~3% holes are 0) and a ``camera`` JSON scaled to the fixture's resolution.
    The same arguments give identical files; the folder appears only once complete.
    """
    out = Path(out)
    if seed < 0:
        raise ConfigError(f"the seed must be ≥ 0, got {seed}")
    if frames_per_city < 1:
        raise ConfigError(f"frames_per_city must be ≥ 1, got {frames_per_city}")
    if height < 32 or width < 32 or height % 32 or width % 32:
        raise ConfigError(
            f"height and width must be positive multiples of 32 (SegNet pools 5 times), "
            f"got {height}×{width}"
        )
    camera = json.dumps(_camera(height, width), indent=2)
    with atomic_dir(out) as tmp:
        write_fixture_marker(tmp, "cityscapes", format="raw", seed=seed)
        rngs = np.random.default_rng(seed).spawn(len(_CITIES))
        for rng, (split, cities) in zip(rngs, _CITIES.items(), strict=True):
            for city in cities:
                dirs = {kind: tmp / kind / split / city for kind in FOLDERS}
                for folder in dirs.values():
                    folder.mkdir(parents=True)
                for seq in range(frames_per_city):
                    stem = f"{city}_{seq:06d}_000019"
                    image, label, disparity = _street(rng, height, width, split == "test")
                    Image.fromarray(image).save(dirs["leftImg8bit"] / f"{stem}_leftImg8bit.png")
                    Image.fromarray(label).save(dirs["gtFine"] / f"{stem}_gtFine_labelIds.png")
                    Image.fromarray(disparity).save(dirs["disparity"] / f"{stem}_disparity.png")
                    (dirs["camera"] / f"{stem}_camera.json").write_text(camera + "\n")
