"""CityScapes / NYUv2 in MTAN format: the synthetic fixture, the reader's checks and the HDF5
contract of `prepare_dense`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from roaming.data.dense import (
    CITYSCAPES_CLASSES,
    NYUV2_CLASSES,
    prepare_dense,
    write_dense_fixture,
)
from roaming.data.splits import load_split, read_attributes
from roaming.errors import ConfigError, DataError

COUNTS = {"n_train": 6, "n_test": 3, "height": 32, "width": 64}
CLASSES = {"cityscapes": CITYSCAPES_CLASSES, "nyuv2": NYUV2_CLASSES}
LABEL_DIR = {"cityscapes": "label_7", "nyuv2": "label"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dense")
    roots = {}
    for dataset in CLASSES:
        write_dense_fixture(base / dataset, dataset=dataset, seed=3, **COUNTS)
        roots[dataset] = base / dataset
    return roots


@pytest.fixture
def raw(pristine: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of a fixture that the test may damage."""
    return lambda dataset: Path(shutil.copytree(pristine[dataset], tmp_path / "raw"))


def prepared(raw_root: Path, out: Path, dataset: str, **kwargs: object) -> dict:
    prepare_dense(raw_root, out, dataset=dataset, progress=False, **kwargs)  # type: ignore[arg-type]
    return read_attributes(out)


def assert_nothing_written(folder: Path) -> None:
    assert not any(folder.iterdir()), list(folder.iterdir())


@pytest.mark.parametrize("dataset", ["cityscapes", "nyuv2"])
def test_round_trip(pristine: dict[str, Path], tmp_path: Path, dataset: str) -> None:
    root = pristine[dataset]
    attrs = prepared(root, tmp_path / "d.h5", dataset)
    assert attrs["format"] == "roaming-h5" and attrs["format_version"] == 2
    assert attrs["dataset"] == dataset and attrs["source_format"] == "mtan_npy"
    assert attrs["class_names"] == list(CLASSES[dataset])
    assert attrs["image_hw"] == [32, 64]
    assert attrs["preprocess"]["depth_kind"] == (
        "mtan_inverse" if dataset == "cityscapes" else "metric_m"
    )
    assert len(attrs["fingerprint"]) == 64
    num_classes = len(CLASSES[dataset])
    with h5py.File(tmp_path / "d.h5") as file:
        assert sorted(file) == ["test", "train"]
        for split, folder, n in (("train", "train", 6), ("test", "val", 3)):
            group = file[split]
            assert group["images"].shape == (n, 32, 64, 3) and group["images"].dtype == np.uint8
            assert group["seg"].shape == (n, 32, 64) and group["seg"].dtype == np.int16
            assert group["depth"].shape == (n, 32, 64) and group["depth"].dtype == np.float32
            assert group["images"].chunks == (1, 32, 64, 3)
            assert list(group["index"][()]) == list(range(n))
            assert ("normals" in group) == (dataset == "nyuv2")
            seg, depth = group["seg"][()], group["depth"][()]
            assert set(np.unique(seg)) <= {-1, *range(num_classes)}
            assert (seg == -1).any() and (depth == 0).any() and (depth > 0).any()
            for i in range(n):
                source = root / folder
                image = np.load(source / "image" / f"{i}.npy")
                np.testing.assert_array_equal(group["images"][i], np.round(image * 255))
                np.testing.assert_array_equal(
                    seg[i], np.load(source / LABEL_DIR[dataset] / f"{i}.npy")
                )
                np.testing.assert_array_equal(
                    depth[i], np.load(source / "depth" / f"{i}.npy")[..., 0]
                )
            if dataset == "nyuv2":
                normals = group["normals"][()]
                assert normals.dtype == np.float32 and normals.shape == (n, 32, 64, 3)
                length = np.linalg.norm(normals, axis=-1)
                np.testing.assert_allclose(length[depth > 0], 1, atol=1e-5)
                assert (length[depth == 0] == 0).all()
            else:
                assert depth.max() <= 0.49
    split = load_split(tmp_path / "d.h5", "train", ("seg", "depth"))
    assert len(split) == 6 and split.targets["seg"].shape == (6, 32, 64)


def test_fixture_is_learnable(pristine: dict[str, Path]) -> None:
    """Every labelled pixel's class is recoverable from its colour: nearest palette colour."""
    root = pristine["nyuv2"] / "train"
    images = np.stack([np.load(root / "image" / f"{i}.npy") for i in range(6)])
    labels = np.stack([np.load(root / "label" / f"{i}.npy") for i in range(6)]).astype(int)
    known = labels >= 0
    means = np.stack([images[labels == c].mean(0) for c in np.unique(labels[known])])
    classes = np.unique(labels[known])
    distance = np.linalg.norm(images[known][:, None] - means[None], axis=-1)
    assert (classes[distance.argmin(1)] == labels[known]).mean() > 0.99


def test_resolution_folder_and_label_alias(
    pristine: dict[str, Path], raw: Callable[[str], Path], tmp_path: Path
) -> None:
    reference = prepared(pristine["cityscapes"], tmp_path / "ref.h5", "cityscapes")
    nested = tmp_path / "nested"
    shutil.copytree(raw("cityscapes"), nested / "low_res")
    for split in ("train", "val"):
        (nested / "low_res" / split / "label_7").rename(nested / "low_res" / split / "label")
    attrs = prepared(nested, tmp_path / "nested.h5", "cityscapes")
    assert attrs["fingerprint"] == reference["fingerprint"]
    assert attrs["preprocess"]["label_folder"] == "label"
    shutil.copytree(nested / "low_res", nested / "high_res")
    with pytest.raises(DataError, match=r"high_res/.*low_res/") as info:
        prepare_dense(nested, tmp_path / "x.h5", dataset="cityscapes", progress=False)
    assert info.value.path == nested
    assert not (tmp_path / "x.h5").exists()


def test_float64_input(
    pristine: dict[str, Path], raw: Callable[[str], Path], tmp_path: Path
) -> None:
    reference = prepared(pristine["nyuv2"], tmp_path / "ref.h5", "nyuv2")
    root = raw("nyuv2")
    for path in root.rglob("*.npy"):
        np.save(path, np.load(path).astype(np.float64))
    assert np.load(root / "train" / "image" / "0.npy").dtype == np.float64
    assert prepared(root, tmp_path / "f64.h5", "nyuv2")["fingerprint"] == reference["fingerprint"]


def test_resize_nearest_keeps_labels(pristine: dict[str, Path], tmp_path: Path) -> None:
    attrs = prepared(pristine["nyuv2"], tmp_path / "up.h5", "nyuv2", size=(64, 128))
    assert attrs["image_hw"] == [64, 128]
    assert attrs["preprocess"]["interpolation"]["seg"] == "nearest"
    original = np.stack(
        [np.load(pristine["nyuv2"] / "train" / "label" / f"{i}.npy") for i in range(6)]
    )
    with h5py.File(tmp_path / "up.h5") as file:
        seg, depth = file["train/seg"][()], file["train/depth"][()]
        normals = file["train/normals"][()]
        assert file["train/images"].shape == (6, 64, 128, 3)
    assert seg.shape == (6, 64, 128)
    assert set(np.unique(seg)) == set(np.unique(original).astype(int))
    np.testing.assert_array_equal(seg[:, ::2, ::2], original)  # exact 2× nearest upsampling
    length = np.linalg.norm(normals, axis=-1)
    assert np.all((np.abs(length - 1) < 1e-5) | (length == 0))
    assert ((length == 0) == (depth == 0)).all()
    prepared(pristine["nyuv2"], tmp_path / "down.h5", "nyuv2", size=(16, 32))
    with h5py.File(tmp_path / "down.h5") as file:
        small = file["train/seg"][()]
    assert small.shape == (6, 16, 32) and set(np.unique(small)) <= set(np.unique(original))


def test_deterministic(tmp_path: Path) -> None:
    prints = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_dense_fixture(tmp_path / name, dataset="cityscapes", seed=seed, **COUNTS)
        prints.append(
            prepared(tmp_path / name, tmp_path / f"{name}.h5", "cityscapes")["fingerprint"]
        )
    assert prints[0] == prints[1] != prints[2]


def _delete(root: Path) -> Path:
    path = root / "train" / "depth" / "2.npy"
    path.unlink()
    return path


def _reshape(root: Path) -> Path:
    path = root / "val" / "label_7" / "1.npy"
    np.save(path, np.zeros((32, 32), dtype=np.float32))
    return path


def _out_of_range(root: Path) -> Path:
    path = root / "train" / "label_7" / "4.npy"
    label = np.load(path)
    label[0, 0] = 7
    np.save(path, label)
    return path


def _bright(root: Path) -> Path:
    path = root / "val" / "image" / "2.npy"
    image = np.load(path)
    image[5, 5, 1] = 1.5
    np.save(path, image)
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_delete, "missing"),
        (_reshape, "32×32 but the first image is 32×64"),
        (_out_of_range, r"label 7 is outside"),
        (_bright, r"\[0, 1\]"),
    ],
)
def test_bad_input(
    raw: Callable[[str], Path], tmp_path: Path, damage: Callable[[Path], Path], message: str
) -> None:
    root = raw("cityscapes")
    path = damage(root)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DataError, match=message) as info:
        prepare_dense(root, out_dir / "d.h5", dataset="cityscapes", progress=False)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert_nothing_written(out_dir)


def test_fixture_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiples of 32"):
        write_dense_fixture(tmp_path / "a", dataset="nyuv2", seed=0, height=48, width=64)
    with pytest.raises(ConfigError, match="unknown dense dataset"):
        write_dense_fixture(tmp_path / "a", dataset="kitti", seed=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ConfigError, match="not an empty folder"):
        write_dense_fixture(tmp_path / "full", dataset="nyuv2", seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_default_fixture_size(tmp_path: Path) -> None:
    write_dense_fixture(tmp_path / "c", dataset="cityscapes", seed=0)
    assert len(list((tmp_path / "c" / "train" / "image").iterdir())) == 48
    assert len(list((tmp_path / "c" / "val" / "label_7").iterdir())) == 16
    assert np.load(tmp_path / "c" / "train" / "image" / "0.npy").shape == (32, 64, 3)
