"""CelebA: read the official release in either folder layout and convert it to one HDF5 file.

The reader is strict because a silently misparsed label file would spoil every result that
follows: each problem is a :class:`~roaming.errors.DataError` naming the file and 1-based line.

The HDF5 file (``format="roaming-h5"``, version 1) has one group per split, ``train``, ``val``
and ``test`` (partition codes 0, 1, 2), each holding, in the order of the release's files:

- ``images``: uint8 (N, H, W, 3) RGB, one image per chunk, already resized like the reference's
  ``Resize(size)`` (178×218 → H 78 × W 64 at size 64); divide by 255 for its ``ToTensor`` input;
- ``attributes``: uint8 (N, 40) in {0, 1}, columns in the order of ``attribute_names``;
- ``filenames``: (N,) UTF-8 strings such as ``000001.jpg`` (fixed-length, checksummed).

Root attributes: ``format``, ``format_version``, ``dataset="celeba"``,
``source_format="celeba_official"``, ``layout`` (``drive`` or ``torchvision``), ``image_hw``
[H, W], ``created_by``, and JSON strings ``attribute_names``, ``task_groups`` (the 8 lists of
attribute indices of :data:`TASK_GROUPS`), ``task_group_names`` and ``preprocess``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from roaming import __version__
from roaming.atomic import atomic_h5, require_space
from roaming.data.prepared import (
    FORMAT,
    FORMAT_VERSION,
    Digests,
    create_dataset,
    create_strings,
    source_attrs,
)
from roaming.errors import ConfigError, DataError

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
"""The 40 attributes in the order of the official header (0-based index = column)."""

TASK_GROUP_NAMES: tuple[str, ...] = (
    "global", "eyes", "hair", "mouth", "nose", "beard", "cheeks", "accessories",
)  # fmt: skip

TASK_GROUPS: tuple[tuple[int, ...], ...] = (
    (2, 10, 13, 14, 18, 20, 25, 26, 39),
    (3, 15, 23, 1, 12),
    (4, 5, 8, 9, 11, 17, 28, 32, 33),
    (6, 21, 31, 36),
    (7, 27),
    (0, 16, 22, 24, 30),
    (19, 29),
    (34, 35, 37, 38),
)
"""The reference's 8 tasks as attribute indices; element order fixes each head's outputs."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""HDF5 group names, indexed by the partition code of ``list_eval_partition.txt``."""


ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"

_BLOCK = 256  # images decoded and written at a time: bounds memory whatever the release size
_ATTRIBUTE_VALUES = frozenset({"-1", "1"})
_PARTITION_CODES = {"0": 0, "1": 1, "2": 2}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

# (layout, folder of the text files, folder holding img_align_celeba/), relative to the root.
_LAYOUTS = (
    ("drive", ("Anno", "Eval"), "Img"),
    ("torchvision", ("celeba", "celeba"), "celeba"),
    ("torchvision", (".", "."), "."),
)
_EXPECTED = (
    f"a CelebA release needs Anno/{ATTR_FILE}, Eval/{PARTITION_FILE} and Img/{IMAGE_DIR}/ "
    f"(Google-Drive layout) or {ATTR_FILE}, {PARTITION_FILE} and {IMAGE_DIR}/ in celeba/ "
    "or in the folder itself (torchvision layout)"
)


@dataclass(frozen=True)
class CelebARelease:
    """Where the files of one release are, and which layout they follow."""

    layout: str
    attr_file: Path
    partition_file: Path
    image_dir: Path


@dataclass(frozen=True)
class CelebAIndex:
    """The validated annotations of a release, one row per image in file order."""

    release: CelebARelease
    attribute_names: tuple[str, ...]
    filenames: list[str]
    attributes: np.ndarray  # uint8 (N, 40) in {0, 1}
    partition: np.ndarray  # uint8 (N,) in {0, 1, 2}


def find_release(root: str | Path) -> CelebARelease:
    """Locate the attribute file, partition file and image folder under ``root``.

    Accepts the Google-Drive layout, the torchvision layout (``root/celeba/``) and ``root``
    pointing at the torchvision ``celeba/`` folder itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder" if root.exists() else "folder not found")
    candidates = [
        CelebARelease(
            layout,
            root / texts[0] / ATTR_FILE,
            root / texts[1] / PARTITION_FILE,
            root / images / IMAGE_DIR,
        )
        for layout, texts, images in _LAYOUTS
    ]
    found = [
        [c.attr_file.is_file(), c.partition_file.is_file(), c.image_dir.is_dir()]
        for c in candidates
    ]
    best = max(range(len(candidates)), key=lambda k: sum(found[k]))  # first wins a tie
    release = candidates[best]
    if all(found[best]):
        return release
    if not any(found[best]):
        raise DataError(root, f"no CelebA release found: {_EXPECTED}")
    paths = (release.attr_file, release.partition_file, release.image_dir)
    missing = next(path for path, ok in zip(paths, found[best], strict=True) if not ok)
    hint = ""
    if missing == release.image_dir and missing.with_suffix(".zip").is_file():
        hint = f"; extract {missing.with_suffix('.zip').name} first"
    raise DataError(missing, f"not found ({_EXPECTED}){hint}")


def _token_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """The non-blank lines of a text file as (1-based line number, whitespace-split tokens).

    Splitting on any run of whitespace accepts every padding variant of the official files,
    trailing spaces, CRLF line endings and a missing final newline. Lines are split one at a
    time: the tokens of all 202,599 rows at once would take about half a gigabyte.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(path, f"cannot read ({error.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(path, "not UTF-8 text", data.count(b"\n", 0, error.start) + 1) from None
    for number, line in enumerate(text.split("\n"), start=1):
        if tokens := line.split():
            yield number, tokens


def _remember(path: Path, lines: dict[str, int], name: str, number: int) -> None:
    """Record the line of image ``name``, rejecting an image listed twice."""
    if name in lines:
        raise DataError(path, f"image {name} is listed twice (first on line {lines[name]})", number)
    lines[name] = number


def read_attr_file(path: str | Path) -> tuple[tuple[str, ...], dict[str, int], np.ndarray]:
    """Parse ``list_attr_celeba.txt``.

    Returns the 40 attribute names, each image's line number (in file order) and the
    attributes as uint8 (N, 40) in {0, 1}. The names must be the official ones in the official
    order, since :data:`TASK_GROUPS` refers to attributes by column.
    """
    path = Path(path)
    rows = _token_lines(path)
    count_row, names_row = next(rows, None), next(rows, None)
    if count_row is None or names_row is None:
        line = 1 if count_row is None else count_row[0] + 1
        raise DataError(path, "expected the image count, then the attribute names", line)
    (count_line, count), (names_line, names) = count_row, names_row
    if len(count) != 1 or not (count[0].isascii() and count[0].isdigit()):
        raise DataError(
            path, f"expected the number of images, found {' '.join(count)!r}", count_line
        )
    if len(names) != len(ATTRIBUTE_NAMES):
        raise DataError(path, f"expected the 40 attribute names, found {len(names)}", names_line)
    for k, (name, official) in enumerate(zip(names, ATTRIBUTE_NAMES, strict=True)):
        if name != official:
            raise DataError(
                path,
                f"attribute {k} is {name!r}, expected {official!r} (official header order)",
                names_line,
            )
    lines: dict[str, int] = {}
    bits = bytearray()
    for number, tokens in rows:
        if len(tokens) != len(names) + 1:
            raise DataError(
                path, f"expected an image name and 40 values, found {len(tokens)} columns", number
            )
        values = tokens[1:]
        if not _ATTRIBUTE_VALUES.issuperset(values):
            k = next(k for k, value in enumerate(values) if value not in _ATTRIBUTE_VALUES)
            raise DataError(path, f"{names[k]} is {values[k]!r}, expected -1 or 1", number)
        _remember(path, lines, tokens[0], number)
        bits.extend([value == "1" for value in values])
    if int(count[0]) != len(lines):
        raise DataError(
            path, f"header says {count[0]} images but the file lists {len(lines)}", count_line
        )
    attributes = np.frombuffer(bytes(bits), dtype=np.uint8).reshape(len(lines), len(names))
    return tuple(names), lines, attributes


def read_partition_file(path: str | Path) -> tuple[dict[str, int], np.ndarray]:
    """Parse ``list_eval_partition.txt``: each image's line number and its uint8 split code."""
    path = Path(path)
    lines: dict[str, int] = {}
    codes = bytearray()
    for number, tokens in _token_lines(path):
        if len(tokens) != 2:
            raise DataError(
                path,
                f"expected an image name and a split code, found {len(tokens)} columns",
                number,
            )
        if tokens[1] not in _PARTITION_CODES:
            raise DataError(path, f"split code {tokens[1]!r} is not 0, 1 or 2", number)
        _remember(path, lines, tokens[0], number)
        codes.append(_PARTITION_CODES[tokens[1]])
    return lines, np.frombuffer(bytes(codes), dtype=np.uint8)


def _check_same_images(
    release: CelebARelease, attr_lines: dict[str, int], partition_lines: dict[str, int]
) -> None:
    """Both files must list the same images in the same order (the reference asserts it)."""
    attr_names, partition_names = list(attr_lines), list(partition_lines)
    if attr_names == partition_names:
        return
    attr_file, partition_file = release.attr_file, release.partition_file
    rule = "both files must list the same images in the same order"
    for k, (attr_name, partition_name) in enumerate(zip_longest(attr_names, partition_names)):
        if partition_name is None:
            raise DataError(
                attr_file,
                f"lists {attr_name}, but {partition_file.name} ends after {k} images; {rule}",
                attr_lines[attr_name],
            )
        if attr_name is None:
            raise DataError(
                partition_file,
                f"lists {partition_name}, but {attr_file.name} ends after {k} images; {rule}",
                partition_lines[partition_name],
            )
        if attr_name != partition_name:
            raise DataError(
                partition_file,
                f"lists {partition_name} where {attr_file.name} line {attr_lines[attr_name]} "
                f"lists {attr_name}; {rule}",
                partition_lines[partition_name],
            )


def read_celeba(root: str | Path) -> CelebAIndex:
    """Find, parse and cross-check a release; every listed image must exist.

    Only the attribute and partition files are read (identity, bounding boxes and landmarks
    are not needed by any task here). Image contents are checked later, during conversion.
    """
    release = find_release(root)
    names, attr_lines, attributes = read_attr_file(release.attr_file)
    partition_lines, partition = read_partition_file(release.partition_file)
    _check_same_images(release, attr_lines, partition_lines)
    if not attr_lines:
        raise DataError(release.attr_file, "lists no images", 1)
    try:
        present = set(os.listdir(release.image_dir))
    except OSError as error:
        raise DataError(release.image_dir, f"cannot list ({error.strerror})") from None
    for name, number in attr_lines.items():
        if name not in present:
            raise DataError(
                release.attr_file, f"image {name} not found in {release.image_dir}", number
            )
    return CelebAIndex(release, names, list(attr_lines), attributes, partition)


def resized_hw(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (H, W) of torchvision's ``Resize(size)``: shorter side to ``size``, the longer
    one scaled and truncated, so 218×178 becomes 78×64."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _load_resized(path: Path, source_wh: tuple[int, int], out_wh: tuple[int, int]) -> np.ndarray:
    """Decode one image and resize it with PIL's antialiased bilinear filter.

    This is exactly what torchvision's ``Resize`` does to a PIL image (it calls
    ``Image.resize(size, BILINEAR)``), so the pixels match the reference's input.
    """
    try:
        with Image.open(path) as image:
            if image.size != source_wh:
                raise DataError(
                    path,
                    f"image is {image.size[0]}×{image.size[1]} but the release's first image is "
                    f"{source_wh[0]}×{source_wh[1]}; all images must share one size",
                )
            rgb = image.convert("RGB")
    except _DECODE_ERRORS as error:
        raise DataError(path, f"cannot decode image ({error})") from None
    return np.asarray(rgb.resize(out_wh, Image.Resampling.BILINEAR))


def _source_size(index: CelebAIndex) -> tuple[int, int]:
    """(width, height) of the first image, read from its header only."""
    path = index.release.image_dir / index.filenames[0]
    try:
        with Image.open(path) as image:
            return image.size
    except _DECODE_ERRORS as error:
        raise DataError(path, f"cannot decode image ({error})") from None


def prepare_celeba(raw: Path, out: Path, *, size: int = 64, progress: bool = True) -> None:
    """Validate the release under ``raw`` and write it atomically to the HDF5 file ``out``.

    Images are decoded by a few threads (PIL releases the GIL) in blocks of 256, so memory
    stays bounded for the full 202,599-image release. On any error no output file is left.
    """
    raw, out = Path(raw), Path(out)
    if size < 1:
        raise ConfigError(f"the resize size must be a positive number of pixels, got {size}")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give the path of the HDF5 file to write")
    index = read_celeba(raw)
    source_wh = _source_size(index)
    height, width = resized_hw(source_wh[1], source_wh[0], size)
    preprocess = {
        "resize": "shorter_side",
        "size": size,
        "interpolation": "bilinear",
        "antialias": True,
        "implementation": "PIL Image.resize, as torchvision Resize(size) on PIL images",
        "source_hw": [source_wh[1], source_wh[0]],
    }

    def load(name: str) -> np.ndarray:
        return _load_resized(index.release.image_dir / name, source_wh, (width, height))

    image_bytes = height * width * 3
    with (
        atomic_h5(out, len(index.filenames) * image_bytes, libver="latest") as file,
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
        tqdm(total=len(index.filenames), unit="img", desc="celeba", disable=not progress) as bar,
    ):
        file.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "dataset": "celeba",
                "source_format": "celeba_official",
                "layout": index.release.layout,
                "image_hw": [height, width],
                "attribute_names": json.dumps(list(index.attribute_names)),
                "task_groups": json.dumps([list(group) for group in TASK_GROUPS]),
                "task_group_names": json.dumps(list(TASK_GROUP_NAMES)),
                "preprocess": json.dumps(preprocess),
                "created_by": f"roaming {__version__}",
                **source_attrs(raw),
            }
        )
        digests = Digests()
        for code, split in enumerate(SPLITS):
            rows = np.flatnonzero(index.partition == code)
            names = [index.filenames[row] for row in rows]
            group = file.create_group(split)
            attributes = create_dataset(group, "attributes", data=index.attributes[rows])
            digests.update(attributes, index.attributes[rows])
            filenames = create_strings(group, "filenames", names)
            digests.update(filenames, names)
            images = create_dataset(
                group,
                "images",
                shape=(len(rows), height, width, 3),
                maxshape=(None, height, width, 3),  # lets an empty split keep the chunk shape
                chunks=(1, height, width, 3),
                dtype=np.uint8,
            )
            for start in range(0, len(names), _BLOCK):
                block = names[start : start + _BLOCK]
                require_space(out, len(block) * image_bytes)  # the disk may fill meanwhile
                pixels = np.stack(list(pool.map(load, block)))
                images[start : start + len(block)] = pixels
                digests.update(images, pixels)
                bar.update(len(block))
        # Checksums of everything written: runs record the fingerprint and start over when
        # their data changed; every read verifies the checksums.
        digests.finish(file)
