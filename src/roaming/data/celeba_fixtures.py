"""A synthetic CelebA release in exactly the official on-disk format.

The real release cannot be downloaded or redistributed here, yet the reader, the converter and
the demo pipeline must run on something shaped like it. The fixture copies the official files'
quirks (header lines, padding, trailing space after the names) and draws every attribute into
its image as a bright (1) or dark (-1) cell of a 5×8 grid over a noisy "face", so a small CNN
learns the labels well above chance after the reference's resize to 78×64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from roaming.atomic import atomic_dir
from roaming.data.celeba import ATTR_FILE, ATTRIBUTE_NAMES, IMAGE_DIR, PARTITION_FILE
from roaming.data.prepared import write_fixture_marker
from roaming.errors import ConfigError

IMAGE_WIDTH, IMAGE_HEIGHT = 178, 218
GRID_COLUMNS, GRID_ROWS = 5, 8
# Large, high-contrast cells: a 1/8-width ResNet-18 on 256 images then reaches test F ≈ 0.84
# (one group, 4 epochs) and 0.75 (all 40, 12 epochs); 22×18 cells of half the contrast gave
# 0.76 and 0.63, and colouring each attribute differently did not help.
CELL_WIDTH, CELL_HEIGHT = 28, 22  # about 10×8 px after the resize to 78×64
CELL_JITTER = 2  # pixels each cell moves, independently per image and per axis
JPEG_QUALITY = 90
LAYOUTS = ("drive", "torchvision")

_FOLDERS = {  # layout -> folders of (attr, identity, bbox, landmarks), partition, images
    "drive": ("Anno", "Eval", "Img"),
    "torchvision": ("celeba", "celeba", "celeba"),
}
_LANDMARKS = ((69, 111), (107, 112), (88, 135), (72, 152), (105, 152))  # eyes, nose, mouth
_LANDMARK_HEADER = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
    "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
)
_ROWS, _COLUMNS = np.ogrid[:IMAGE_HEIGHT, :IMAGE_WIDTH]


def attribute_cell(index: int) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) in the 178×218 image where attribute ``index`` is drawn,
    before jitter: row ``index // 5``, column ``index % 5`` of the grid."""
    row, column = divmod(index, GRID_COLUMNS)
    left = round((column + 0.5) * IMAGE_WIDTH / GRID_COLUMNS - CELL_WIDTH / 2)
    top = round((row + 0.5) * IMAGE_HEIGHT / GRID_ROWS - CELL_HEIGHT / 2)
    return left, top, left + CELL_WIDTH, top + CELL_HEIGHT


def _draw(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 218×178 RGB image: grey background, skin ellipse, a cell per attribute, noise."""
    image = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), rng.integers(90, 166), dtype=np.int16)
    centre_x = IMAGE_WIDTH / 2 + rng.uniform(-8, 8)
    centre_y = IMAGE_HEIGHT / 2 + rng.uniform(-8, 8)
    radius_x, radius_y = rng.uniform(55, 72), rng.uniform(75, 98)
    face = ((_COLUMNS - centre_x) / radius_x) ** 2 + ((_ROWS - centre_y) / radius_y) ** 2 <= 1
    image[face] = rng.integers((170, 120, 90), (231, 171, 141))
    for index, value in enumerate(values):
        left, top, right, bottom = attribute_cell(index)
        dx, dy = rng.integers(-CELL_JITTER, CELL_JITTER + 1, size=2)
        level = rng.integers(200, 256) if value > 0 else rng.integers(0, 56)
        image[top + dy : bottom + dy, left + dx : right + dx] = level + rng.integers(-8, 9, 3)
    image += rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def _attributes(rng: np.random.Generator, n: int, n_train: int) -> np.ndarray:
    """±1 int8 (n, 40), Bernoulli(0.3–0.6) per attribute, both classes present in train."""
    positive = rng.random((n, len(ATTRIBUTE_NAMES))) < rng.uniform(0.3, 0.6, len(ATTRIBUTE_NAMES))
    for column in range(len(ATTRIBUTE_NAMES)):
        if positive[:n_train, column].min() == positive[:n_train, column].max():
            row = rng.integers(n_train)
            positive[row, column] = not positive[row, column]
    return np.where(positive, 1, -1).astype(np.int8)


def _text_files(
    names: list[str], codes: list[int], values: np.ndarray, rng: np.random.Generator
) -> dict[str, str]:
    """The five official text files, padded as published, LF endings, trailing newline."""
    count = f"{len(names)}\n"
    attr = [count, " ".join(ATTRIBUTE_NAMES) + " \n"]
    attr += [
        f"{name} {row[0]}" + "".join(f" {value:2d}" for value in row[1:]) + "\n"
        for name, row in zip(names, values.tolist(), strict=True)
    ]
    identities = rng.integers(1, 6, len(names))
    boxes = np.stack(
        [
            rng.integers(low, high, len(names))
            for low, high in ((40, 200), (40, 150), (150, 300), (200, 400))
        ],
        axis=1,
    )
    landmarks = np.asarray(_LANDMARKS).reshape(-1) + rng.integers(-3, 4, (len(names), 10))
    return {
        PARTITION_FILE: "".join(
            f"{name} {code}\n" for name, code in zip(names, codes, strict=True)
        ),
        ATTR_FILE: "".join(attr),
        "identity_CelebA.txt": "".join(
            f"{name} {k}\n" for name, k in zip(names, identities.tolist(), strict=True)
        ),
        "list_bbox_celeba.txt": count
        + "image_id x_1 y_1 width height\n"
        + "".join(
            f"{name} {x:5d} {y:3d} {w:3d} {h:3d}\n"
            for name, (x, y, w, h) in zip(names, boxes.tolist(), strict=True)
        ),
        "list_landmarks_align_celeba.txt": count
        + _LANDMARK_HEADER
        + "\n"
        + "".join(
            f"{name} {row[0]}" + "".join(f" {value:4d}" for value in row[1:]) + "\n"
            for name, row in zip(names, landmarks.tolist(), strict=True)
        ),
    }


def _write_release(root: Path, seed: int, counts: tuple[int, int, int], layout: str) -> None:
    """Write the text files and images of a release into the existing folder ``root``."""
    annotations, partition, images = _FOLDERS[layout]
    n = sum(counts)
    names = [f"{number:06d}.jpg" for number in range(1, n + 1)]
    codes = [code for code, count in enumerate(counts) for _ in range(count)]
    rng = np.random.default_rng([seed, 0])
    values = _attributes(rng, n, counts[0])
    for filename, text in _text_files(names, codes, values, rng).items():
        folder = root / (partition if filename == PARTITION_FILE else annotations)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_text(text, encoding="ascii", newline="\n")
    image_dir = root / images / IMAGE_DIR
    image_dir.mkdir(parents=True)
    for number, (name, row) in enumerate(zip(names, values, strict=True), start=1):
        pixels = _draw(row, np.random.default_rng([seed, number]))
        Image.fromarray(pixels).save(
            image_dir / name, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0"
        )


def write_celeba_fixture(
    out: Path, *, seed: int, n_train: int, n_val: int, n_test: int, layout: str
) -> None:
    """Write a synthetic release into the new (or empty) folder ``out``.

    ``layout="drive"`` gives ``out/{Img,Anno,Eval}/``, ``layout="torchvision"`` gives
    ``out/celeba/``. The same arguments give byte-identical files. The folder appears only
    once complete: it is written under a temporary sibling name and renamed.
    """
    out = Path(out)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown CelebA layout {layout!r} (choose drive or torchvision)")
    if seed < 0:
        raise ConfigError(f"the seed must be ≥ 0, got {seed}")
    if min(n_val, n_test) < 0:
        raise ConfigError(f"image counts must be ≥ 0, got n_val={n_val}, n_test={n_test}")
    if n_train < 2:
        raise ConfigError(f"n_train must be ≥ 2 so every attribute has both classes, got {n_train}")
    with atomic_dir(out) as tmp:
        write_fixture_marker(tmp, "celeba", format="raw", layout=layout, seed=seed)
        _write_release(tmp, seed, (n_train, n_val, n_test), layout)
