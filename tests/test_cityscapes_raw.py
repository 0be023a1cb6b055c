"""Raw CityScapes: the synthetic fixture, the reader's checks, the conversion to the shared
HDF5 contract and the CLI's raw-vs-MTAN detection."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from roaming.cli import main
from roaming.data.cityscapes_raw import (
    LABEL_TO_CATEGORY,
    LABEL_TO_TRAIN,
    prepare_cityscapes_raw,
    read_cityscapes_split,
    write_cityscapes_raw_fixture,
)
from roaming.data.dense import CITYSCAPES_CLASSES, write_dense_fixture
from roaming.data.splits import load_split, read_attributes
from roaming.errors import ConfigError, DataError

TRAIN = "train/aachen/aachen_000001_000019"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes") / "raw"
    write_cityscapes_raw_fixture(root, seed=4)
    return root


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    """A private copy that the test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "raw"))


def _png(root: Path, kind: str, stem: str, suffix: str) -> np.ndarray:
    return np.asarray(Image.open(root / kind / f"{stem}_{suffix}.png")).astype(np.int64)


def test_fixture_layout(pristine: Path) -> None:
    train = read_cityscapes_split(pristine, "train")
    assert [f.name for f in train] == [
        "aachen_000000_000019",
        "aachen_000001_000019",
        "bochum_000000_000019",
        "bochum_000001_000019",
    ]
    assert [f.name for f in read_cityscapes_split(pristine, "val")] == [
        "frankfurt_000000_000019",
        "frankfurt_000001_000019",
    ]
    assert len(read_cityscapes_split(pristine, "test")) == 2
    test_labels = _png(pristine, "gtFine", "test/berlin/berlin_000000_000019", "gtFine_labelIds")
    assert set(np.unique(test_labels)) <= {0, 1, 2, 3}
    with Image.open(pristine / "disparity" / f"{TRAIN}_disparity.png") as image:
        assert image.mode == "I;16" and image.size == (128, 64)
    camera = json.loads((pristine / "camera" / f"{TRAIN}_camera.json").read_text())
    assert camera["intrinsic"]["fx"] == pytest.approx(2262.52 * 128 / 2048)


def test_label_tables() -> None:
    # label id → (trainId, category): road, sidewalk, parking (ignored), building, pole,
    # vegetation, sky, person, car, caravan (ignored), bicycle, unlabeled, ego vehicle, static.
    expected = {
        7: (0, 0), 8: (1, 0), 9: (-1, -1), 11: (2, 1), 17: (5, 2), 21: (8, 3), 23: (10, 4),
        24: (11, 5), 26: (13, 6), 29: (-1, -1), 33: (18, 6), 0: (-1, -1), 1: (-1, -1),
        4: (-1, -1),
    }  # fmt: skip
    for label_id, (train_id, category) in expected.items():
        assert (LABEL_TO_TRAIN[label_id], LABEL_TO_CATEGORY[label_id]) == (train_id, category)
    assert len(LABEL_TO_CATEGORY) == 34
    assert sorted(set(LABEL_TO_TRAIN.tolist()) - {-1}) == list(range(19))


def test_round_trip_default_size(pristine: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    prepare_cityscapes_raw(pristine, out, progress=False)
    attrs = read_attributes(out)
    assert attrs["format"] == "roaming-h5" and attrs["format_version"] == 2
    assert attrs["dataset"] == "cityscapes" and attrs["source_format"] == "cityscapes_raw"
    assert attrs["class_names"] == list(CITYSCAPES_CLASSES)
    assert attrs["image_hw"] == [128, 256]
    assert len(attrs["fingerprint"]) == 64
    pre = attrs["preprocess"]
    assert pre["source_hw"] == [64, 128] and pre["size"] == [128, 256]
    assert pre["depth_kind"] == "mtan_inverse"
    assert pre["interpolation"]["seg"] == "nearest" and pre["splits"] == {
        "train": "train",
        "test": "val",
    }
    with h5py.File(out) as file:
        for split, n in (("train", 4), ("test", 2)):
            group = file[split]
            assert group["images"].shape == (n, 128, 256, 3)
            assert group["images"].dtype == np.uint8
            assert group["seg"].shape == (n, 128, 256) and group["seg"].dtype == np.int16
            assert group["depth"].shape == (n, 128, 256) and group["depth"].dtype == np.float32
            assert group["images"].chunks == (1, 128, 256, 3)
            assert group["index"][()].tolist() == list(range(n))
            assert "normals" not in group
        assert file["test/name"][0].decode() == "frankfurt_000000_000019"
        assert file["train/seg"].attrs["ignore_index"] == -1
        assert file["train/seg"].attrs["num_classes"] == 7
        assert file["train/depth"].attrs["kind"] == "mtan_inverse"
        seg = file["train/seg"][()]
        depth = file["train/depth"][()]
    assert set(np.unique(seg)) == {-1, *range(7)}  # every category appears in train
    assert depth.min() == 0 and 0 < depth.max() < 1
    assert np.all(depth[seg == 4] == 0)  # sky has no disparity
    split = load_split(out, "train", ("seg", "depth"))
    assert len(split) == 4


def test_native_size_mapping_and_depth(pristine: Path, tmp_path: Path) -> None:
    inverse, metric = tmp_path / "inverse.h5", tmp_path / "metric.h5"
    prepare_cityscapes_raw(pristine, inverse, size=None, progress=False)
    prepare_cityscapes_raw(pristine, metric, size=None, depth="metric_m", progress=False)
    label = _png(pristine, "gtFine", TRAIN, "gtFine_labelIds")
    p = _png(pristine, "disparity", TRAIN, "disparity")
    camera = json.loads((pristine / "camera" / f"{TRAIN}_camera.json").read_text())
    bf = camera["extrinsic"]["baseline"] * camera["intrinsic"]["fx"]
    with h5py.File(inverse) as file:
        assert file.attrs["image_hw"].tolist() == [64, 128]
        seg, depth = file["train/seg"][1], file["train/depth"][1]
        image = file["train/images"][1]
    with h5py.File(metric) as file:
        metres = file["train/depth"][1]
        assert file["train/depth"].attrs["kind"] == "metric_m"
        assert json.loads(file.attrs["preprocess"])["depth_kind"] == "metric_m"
    np.testing.assert_array_equal(image, _png(pristine, "leftImg8bit", TRAIN, "leftImg8bit"))
    for label_id, category in ((7, 0), (11, 1), (23, 4), (26, 6), (1, -1), (4, -1)):
        assert np.any(label == label_id)
        assert np.all(seg[label == label_id] == category)
    np.testing.assert_array_equal(depth, (p / 65535).astype(np.float32))
    valid = p > 1
    assert np.all(metres[~valid] == 0) and np.all(metres[valid] > 0)
    np.testing.assert_allclose(metres[valid], bf / ((p[valid] - 1) / 256), rtol=1e-6)
    car = valid & (label == 26)
    np.testing.assert_allclose(metres[car], 12.0, rtol=0.01)  # the fixture's car depth


def test_fixture_is_learnable(pristine: Path) -> None:
    """Pixel colours predict the category (nearest class mean) almost everywhere."""
    frames = read_cityscapes_split(pristine, "train")
    colours = np.concatenate([np.asarray(Image.open(f.image)).reshape(-1, 3) for f in frames])
    labels = np.concatenate([np.asarray(Image.open(f.label)).reshape(-1) for f in frames])
    category = LABEL_TO_CATEGORY[labels]
    keep = category >= 0
    colours, category = colours[keep].astype(float), category[keep]
    means = np.stack([colours[category == c].mean(0) for c in range(7)])
    predicted = np.argmin(((colours[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == category) > 0.95


def test_deterministic(tmp_path: Path) -> None:
    prints = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_cityscapes_raw_fixture(tmp_path / name, seed=seed)
        prepare_cityscapes_raw(tmp_path / name, tmp_path / f"{name}.h5", progress=False)
        prints.append(read_attributes(tmp_path / f"{name}.h5")["fingerprint"])
    assert prints[0] == prints[1] != prints[2]


def _missing_disparity(root: Path) -> Path:
    path = root / "disparity" / f"{TRAIN}_disparity.png"
    path.unlink()
    return path


def _orphan_label(root: Path) -> Path:
    path = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000009_000019_gtFine_labelIds.png"
    shutil.copy(root / "gtFine" / f"{TRAIN}_gtFine_labelIds.png", path)
    return path


def _bad_png(root: Path) -> Path:
    path = root / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000001_000019_leftImg8bit.png"
    path.write_bytes(b"not a png at all")
    return path


def _unknown_label(root: Path) -> Path:
    path = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000001_000019_gtFine_labelIds.png"
    label = np.asarray(Image.open(path)).copy()
    label[3, 3] = 40
    Image.fromarray(label).save(path)
    return path


def _bad_camera(root: Path) -> Path:
    path = root / "camera" / f"{TRAIN}_camera.json"
    path.write_text(json.dumps({"extrinsic": {}, "intrinsic": {"fx": 1.0}}))
    return path


def _wrong_size(root: Path) -> Path:
    path = root / "disparity" / f"{TRAIN}_disparity.png"
    Image.fromarray(np.ones((32, 128), dtype=np.uint16)).save(path)
    return path


def _rgb_disparity(root: Path) -> Path:
    path = root / "disparity" / f"{TRAIN}_disparity.png"
    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_missing_disparity, "missing: the counterpart of"),
        (_orphan_label, "has no image"),
        (_bad_png, "not a readable PNG"),
        (_unknown_label, "unknown label id 40"),
        (_bad_camera, "baseline"),
        (_wrong_size, "32×128 but the first image is 64×128"),
        (_rgb_disparity, "mode I;16"),
    ],
)
def test_bad_input(raw: Path, tmp_path: Path, damage: Callable[[Path], Path], message: str) -> None:
    path = damage(raw)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DataError, match=message) as info:
        prepare_cityscapes_raw(raw, out_dir / "c.h5", progress=False)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert not any(out_dir.iterdir())


def test_bad_arguments(pristine: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown depth kind"):
        prepare_cityscapes_raw(pristine, tmp_path / "c.h5", depth="disparity", progress=False)
    with pytest.raises(ConfigError, match="multiples of 32"):
        write_cityscapes_raw_fixture(tmp_path / "f", seed=0, height=48)
    (tmp_path / "gtFine").mkdir()
    (tmp_path / "leftImg8bit").mkdir()
    with pytest.raises(DataError, match="folder not found"):
        prepare_cityscapes_raw(tmp_path, tmp_path / "c.h5", progress=False)
    assert not (tmp_path / "c.h5").exists()


def test_cli_raw_and_detection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["fixtures", "cityscapes", "--format", "raw", "--out", str(tmp_path / "raw")])
    main(["prepare", "cityscapes", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "r.h5"),
          "--quiet"])  # fmt: skip
    attrs = read_attributes(tmp_path / "r.h5")
    assert attrs["source_format"] == "cityscapes_raw" and attrs["image_hw"] == [128, 256]
    main(["prepare", "cityscapes", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "s.h5"),
          "--size", "64", "128", "--quiet"])  # fmt: skip
    assert read_attributes(tmp_path / "s.h5")["image_hw"] == [64, 128]

    write_dense_fixture(tmp_path / "mtan", dataset="cityscapes", seed=0, n_train=2, n_test=1)
    main(["prepare", "cityscapes", "--raw", str(tmp_path / "mtan"), "--out", str(tmp_path / "m.h5"),
          "--quiet"])  # fmt: skip
    attrs = read_attributes(tmp_path / "m.h5")
    assert attrs["source_format"] == "mtan_npy" and attrs["image_hw"] == [32, 64]

    main(["prepare", "cityscapes", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "d.h5"),
          "--depth", "metric_m", "--quiet"])  # fmt: skip
    assert read_attributes(tmp_path / "d.h5")["preprocess"]["depth_kind"] == "metric_m"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "cityscapes", "--raw", str(tmp_path / "raw"), "--out",
              str(tmp_path / "n.h5"), "--depth", "inpainted"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "unknown depth kind 'inpainted'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fixtures", "cityscapes", "--format", "raw", "--n-train", "3",
              "--out", str(tmp_path / "x")])  # fmt: skip
    assert not (tmp_path / "n.h5").exists() and not (tmp_path / "x").exists()
