"""CelebA: the synthetic release, the reader's checks and the HDF5 contract of `prepare`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from roaming.cli import main
from roaming.data.celeba import (
    ATTR_FILE,
    ATTRIBUTE_NAMES,
    PARTITION_FILE,
    SPLITS,
    TASK_GROUP_NAMES,
    TASK_GROUPS,
    find_release,
    prepare_celeba,
    read_celeba,
    resized_hw,
)
from roaming.data.celeba_fixtures import CELL_JITTER, attribute_cell, write_celeba_fixture
from roaming.data.prepared import FIXTURE_MARKER
from roaming.data.splits import load_split, read_attributes
from roaming.errors import ConfigError, DataError

COUNTS = {"n_train": 12, "n_val": 4, "n_test": 4}
N = sum(COUNTS.values())
NAMES = [f"{number:06d}.jpg" for number in range(1, N + 1)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("celeba") / "drive"
    write_celeba_fixture(root, seed=7, layout="drive", **COUNTS)
    return root


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the drive-layout fixture that the test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "raw"))


def reference_parse(root: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """Read a release the way the MR reference does: split on newlines, drop the last element,
    names from line index 1, a label is 1 iff its token is exactly "1"."""
    release = find_release(root)
    attr = release.attr_file.read_text().split("\n")[:-1]
    partition = release.partition_file.read_text().split("\n")[:-1]
    assert attr[1].split() == list(ATTRIBUTE_NAMES)
    rows: dict[str, tuple[list[str], list[list[bool]]]] = {split: ([], []) for split in SPLITS}
    for attr_line, partition_line in zip(attr[2:], partition, strict=True):
        name, code = partition_line.split()
        tokens = attr_line.split()
        assert tokens[0] == name
        rows[SPLITS[int(code)]][0].append(name)
        rows[SPLITS[int(code)]][1].append([token == "1" for token in tokens[1:]])
    return {
        split: (names, np.array(labels, dtype=np.uint8).reshape(-1, 40))
        for split, (names, labels) in rows.items()
    }


def check_contract(path: Path, raw: Path, layout: str, counts: tuple[int, int, int]) -> None:
    """Everything later stages rely on in a prepared file."""
    expected = reference_parse(raw)
    with h5py.File(path, "r") as file:
        assert set(file) == set(SPLITS)
        attrs = file.attrs
        assert (attrs["format"], attrs["format_version"]) == ("roaming-h5", 2)
        assert (attrs["dataset"], attrs["source_format"]) == ("celeba", "celeba_official")
        assert attrs["layout"] == layout
        assert list(attrs["image_hw"]) == [78, 64]
        assert attrs["created_by"].startswith("roaming ")
        assert json.loads(attrs["attribute_names"]) == list(ATTRIBUTE_NAMES)
        assert json.loads(attrs["task_groups"]) == [list(group) for group in TASK_GROUPS]
        assert json.loads(attrs["task_group_names"]) == list(TASK_GROUP_NAMES)
        assert json.loads(attrs["preprocess"])["size"] == 64
        for split, count in zip(SPLITS, counts, strict=True):
            group = file[split]
            images, attributes = group["images"], group["attributes"]
            assert images.shape == (count, 78, 64, 3) and images.dtype == np.uint8
            assert images.chunks == (1, 78, 64, 3)
            assert attributes.shape == (count, 40) and attributes.dtype == np.uint8
            assert set(np.unique(attributes[()])) <= {0, 1}
            filenames = [name.decode() for name in group["filenames"][()]]
            assert h5py.check_string_dtype(group["filenames"].dtype) is not None
            assert filenames == expected[split][0]
            np.testing.assert_array_equal(attributes[()], expected[split][1])


@pytest.mark.parametrize("layout", ["drive", "torchvision", "flat"])
def test_round_trip(tmp_path: Path, layout: str) -> None:
    written = "drive" if layout == "drive" else "torchvision"
    write_celeba_fixture(tmp_path / "raw", seed=1, layout=written, **COUNTS)
    raw = tmp_path / "raw" / "celeba" if layout == "flat" else tmp_path / "raw"
    prepare_celeba(raw, tmp_path / "celeba.h5", progress=False)
    check_contract(tmp_path / "celeba.h5", raw, written, (12, 4, 4))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["celeba.h5", "raw"]


def test_empty_split_keeps_its_group(tmp_path: Path) -> None:
    write_celeba_fixture(tmp_path / "raw", seed=2, n_train=5, n_val=3, n_test=0, layout="drive")
    prepare_celeba(tmp_path / "raw", tmp_path / "celeba.h5", progress=False)
    check_contract(tmp_path / "celeba.h5", tmp_path / "raw", "drive", (5, 3, 0))


def test_prepare_is_deterministic_and_readable_by_training(raw: Path, tmp_path: Path) -> None:
    prepare_celeba(raw, tmp_path / "a.h5", progress=False)
    prepare_celeba(raw, tmp_path / "b.h5", progress=False)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    attrs = read_attributes(tmp_path / "a.h5")
    assert attrs["task_groups"] == [list(group) for group in TASK_GROUPS]
    assert attrs["attribute_names"] == list(ATTRIBUTE_NAMES)
    split = load_split(tmp_path / "a.h5", "val", ("attributes",))
    assert tuple(split.images.shape) == (4, 78, 64, 3)
    assert tuple(split.targets["attributes"].shape) == (4, 40)


def test_resize_matches_torchvision(raw: Path, tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    from PIL import Image
    from torchvision.transforms import Resize

    assert resized_hw(218, 178, 64) == (78, 64)
    assert resized_hw(178, 218, 64) == (64, 78)
    assert resized_hw(218, 178, 70) == (85, 70)  # truncated like torchvision, not rounded
    prepare_celeba(raw, tmp_path / "celeba.h5", size=64, progress=False)
    with h5py.File(tmp_path / "celeba.h5", "r") as file:
        prepared = file["train/images"][:3]
    for k, image in enumerate(prepared):
        with Image.open(raw / "Img" / "img_align_celeba" / NAMES[k]) as original:
            np.testing.assert_array_equal(image, np.asarray(Resize(64)(original)))


def test_torchvision_celeba_reads_the_fixture(tmp_path: Path, monkeypatch) -> None:
    celeba = pytest.importorskip("torchvision.datasets.celeba")
    monkeypatch.setattr(celeba, "check_integrity", lambda *args, **kwargs: True)
    write_celeba_fixture(tmp_path / "raw", seed=4, layout="torchvision", **COUNTS)
    expected = reference_parse(tmp_path / "raw")
    for split, name in zip(SPLITS, ["train", "valid", "test"], strict=True):
        dataset = celeba.CelebA(str(tmp_path / "raw"), split=name, target_type="attr")
        assert list(dataset.filename) == expected[split][0]
        np.testing.assert_array_equal(dataset.attr.numpy(), expected[split][1])
        image, _ = dataset[0]
        assert image.size == (178, 218)


def test_drawn_attributes_are_visible_after_prepare(raw: Path, tmp_path: Path) -> None:
    prepare_celeba(raw, tmp_path / "celeba.h5", progress=False)
    with h5py.File(tmp_path / "celeba.h5", "r") as file:
        images = np.concatenate([file[f"{split}/images"][()] for split in SPLITS]).astype(float)
        labels = np.concatenate([file[f"{split}/attributes"][()] for split in SPLITS])
    correct = 0
    for index in range(40):
        left, top, right, bottom = attribute_cell(index)
        assert min(right - left, bottom - top) - 2 * CELL_JITTER >= 16
        x, y = int((left + right) / 2 * 64 / 178), int((top + bottom) / 2 * 78 / 218)
        brightness = images[:, y, x - 1 : x + 2].mean(axis=(1, 2))
        on, off = brightness[labels[:, index] == 1], brightness[labels[:, index] == 0]
        assert on.mean() - off.mean() > 120, ATTRIBUTE_NAMES[index]
        correct += ((brightness > 128) == labels[:, index]).sum()
    assert correct / labels.size > 0.99


def test_fixture_files_follow_the_official_format(pristine: Path, tmp_path: Path) -> None:
    write_celeba_fixture(tmp_path / "same", seed=7, layout="drive", **COUNTS)
    files = sorted(path.relative_to(pristine) for path in pristine.rglob("*") if path.is_file())
    assert len(files) == 5 + N + 1  # the release, and the marker that it is synthetic
    assert Path(FIXTURE_MARKER) in files
    for relative in files:
        assert (pristine / relative).read_bytes() == (tmp_path / "same" / relative).read_bytes()
    write_celeba_fixture(tmp_path / "other", seed=8, layout="drive", **COUNTS)
    attr = (pristine / "Anno" / ATTR_FILE).read_bytes()
    assert attr != (tmp_path / "other" / "Anno" / ATTR_FILE).read_bytes()
    assert b"\r" not in attr and attr.endswith(b"\n")
    lines = attr.decode().split("\n")[:-1]
    assert lines[0] == str(N) and lines[1] == " ".join(ATTRIBUTE_NAMES) + " "
    for name, line in zip(NAMES, lines[2:], strict=True):  # first value unpadded, then width 2
        values = [int(token) for token in line.split()[1:]]
        assert line == f"{name} {values[0]}" + "".join(f" {value:2d}" for value in values[1:])
    assert any(line.startswith(f"{name} 1 ") for name, line in zip(NAMES, lines[2:], strict=True))
    bbox = (pristine / "Anno" / "list_bbox_celeba.txt").read_text().split("\n")
    assert bbox[1] == "image_id x_1 y_1 width height" and len(bbox[2]) == len("000001.jpg") + 18
    partition = (pristine / "Eval" / PARTITION_FILE).read_text().split("\n")[:-1]
    assert [line.split()[1] for line in partition] == ["0"] * 12 + ["1"] * 4 + ["2"] * 4
    train = reference_parse(pristine)["train"][1]
    assert (train.min(axis=0) == 0).all() and (train.max(axis=0) == 1).all()
    from PIL import Image

    with Image.open(pristine / "Img" / "img_align_celeba" / NAMES[-1]) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (178, 218))


@pytest.mark.parametrize(
    "arguments",
    [
        {"n_train": 1},
        {"n_val": -1},
        {"n_test": -2},
        {"seed": -1},
        {"layout": "kaggle"},
    ],
)
def test_fixture_rejects_bad_arguments(tmp_path: Path, arguments: dict) -> None:
    kwargs = {"seed": 0, "layout": "drive", **COUNTS, **arguments}
    with pytest.raises(ConfigError):
        write_celeba_fixture(tmp_path / "raw", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_fixture_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        write_celeba_fixture(tmp_path / "raw", seed=0, layout="drive", **COUNTS)
    assert [path.name for path in tmp_path.iterdir()] == ["raw"]


def _rewrite(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().split("\n")[:-1]
    path.write_text("\n".join(edit(lines)) + "\n")


def test_parser_accepts_whitespace_variants(raw: Path) -> None:
    before = read_celeba(raw)
    for path in (raw / "Anno" / ATTR_FILE, raw / "Eval" / PARTITION_FILE):
        lines = path.read_text().split("\n")[:-1]
        messy = [
            ("  " if k % 3 == 0 else "") + line.replace(" ", "   \t" if k % 2 else "  ") + "  "
            for k, line in enumerate(lines)
        ]
        path.write_bytes("\r\n".join(messy).encode())  # CRLF, no final newline
    after = read_celeba(raw)
    assert after.filenames == before.filenames == NAMES
    np.testing.assert_array_equal(after.attributes, before.attributes)
    np.testing.assert_array_equal(after.partition, [0] * 12 + [1] * 4 + [2] * 4)
    assert after.attribute_names == ATTRIBUTE_NAMES


def _remove(relative: str) -> Callable[[Path], None]:
    return lambda raw: (raw / relative).unlink()


def _edit(relative: str, edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    return lambda raw: _rewrite(raw / relative, edit)


def _set(lines: list[str], k: int, text: str) -> list[str]:
    return [*lines[:k], text, *lines[k + 1 :]]


def _truncate(raw: Path) -> None:
    path = raw / "Img" / "img_align_celeba" / NAMES[13]
    path.write_bytes(path.read_bytes()[:900])


ATTR = f"Anno/{ATTR_FILE}"
PARTITION = f"Eval/{PARTITION_FILE}"
IMAGES = "Img/img_align_celeba"

BAD_INPUTS = {  # damage -> (file named by the error, relative to raw; line; words in message)
    "missing attr file": (_remove(ATTR), ATTR, None, "not found"),
    "missing image": (_remove(f"{IMAGES}/000003.jpg"), ATTR, 5, "000003.jpg not found"),
    "order differs": (
        _edit(PARTITION, lambda ls: [ls[0], ls[2], ls[1], *ls[3:]]),
        PARTITION,
        2,
        "same order",
    ),
    "partition shorter": (_edit(PARTITION, lambda ls: ls[:-1]), ATTR, N + 2, "ends after 19"),
    "corrupt JPEG": (_truncate, f"{IMAGES}/000014.jpg", None, "cannot decode"),
    "garbage JPEG": (
        lambda raw: (raw / IMAGES / "000001.jpg").write_bytes(b"not a jpeg"),
        f"{IMAGES}/000001.jpg",
        None,
        "cannot decode",
    ),
    "wrong column count": (
        _edit(ATTR, lambda ls: _set(ls, 6, ls[6][:-3])),
        ATTR,
        7,
        "found 40 columns",
    ),
    "bad value": (
        _edit(ATTR, lambda ls: _set(ls, 9, ls[9][:-2] + " 0")),
        ATTR,
        10,
        "Young is '0'",
    ),
    "bad split code": (
        _edit(PARTITION, lambda ls: _set(ls, 3, "000004.jpg 3")),
        PARTITION,
        4,
        "split code '3'",
    ),
    "header count": (_edit(ATTR, lambda ls: _set(ls, 0, "21")), ATTR, 1, "header says 21"),
    "39 names": (
        _edit(ATTR, lambda ls: _set(ls, 1, ls[1].replace("Young", ""))),
        ATTR,
        2,
        "found 39",
    ),
    "renamed attribute": (
        _edit(ATTR, lambda ls: _set(ls, 1, ls[1].replace("Bald", "Hairless"))),
        ATTR,
        2,
        "'Hairless', expected 'Bald'",
    ),
    "image listed twice": (
        _edit(ATTR, lambda ls: _set(ls, 3, ls[2])),
        ATTR,
        4,
        "listed twice",
    ),
    "zip not extracted": (
        lambda raw: (
            shutil.make_archive(str(raw / IMAGES), "zip", raw / IMAGES)
            and shutil.rmtree(raw / IMAGES)
        ),
        IMAGES,
        None,
        "extract img_align_celeba.zip",
    ),
    "no release": (
        lambda raw: [shutil.rmtree(raw / folder) for folder in ("Anno", "Eval", "Img")],
        ".",
        None,
        "no CelebA release found",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_reported_and_leaves_no_output(raw: Path, tmp_path: Path, case: str) -> None:
    damage, relative, line, words = BAD_INPUTS[case]
    damage(raw)
    out = tmp_path / "out" / "celeba.h5"
    with pytest.raises(DataError) as caught:
        prepare_celeba(raw, out, progress=False)
    assert caught.value.path == (raw / relative if relative != "." else raw)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_prepare_rejects_bad_arguments(raw: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        prepare_celeba(raw, tmp_path / "celeba.h5", size=0, progress=False)
    with pytest.raises(ConfigError):
        prepare_celeba(raw, tmp_path, progress=False)


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counts = ["--n-train", "12", "--n-val", "4", "--n-test", "4"]
    main(["fixtures", "celeba", "--out", str(tmp_path / "raw"), "--layout", "torchvision", *counts])
    main(["prepare", "celeba", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "c.h5")])
    check_contract(tmp_path / "c.h5", tmp_path / "raw", "torchvision", (12, 4, 4))
    assert "20/20" in capsys.readouterr().err  # the progress bar


def test_cli_reports_bad_input_in_one_line(raw: Path, tmp_path: Path) -> None:
    (raw / IMAGES / "000003.jpg").unlink()
    out = tmp_path / "celeba.h5"
    command = ["prepare", "celeba", "--raw", str(raw), "--out", str(out), "--quiet"]
    result = subprocess.run(
        [sys.executable, "-m", "roaming", *command], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"roaming prepare: error: {raw / ATTR}:5: image 000003.jpg")
    assert not out.exists()


def test_fingerprint_identifies_the_prepared_data(tmp_path):
    """The same release gives the same digest; different data gives a different one."""
    digests = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_celeba_fixture(
            tmp_path / name, seed=seed, n_train=6, n_val=2, n_test=2, layout="drive"
        )
        prepare_celeba(tmp_path / name, tmp_path / f"{name}.h5", progress=False)
        with h5py.File(tmp_path / f"{name}.h5") as file:
            digests.append(file.attrs["fingerprint"])
    assert digests[0] == digests[1] != digests[2]
    assert len(digests[0]) == 64
