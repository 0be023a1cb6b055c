"""Raw NYUv2: the synthetic labelled ``.mat`` and meta files, the reader's checks, normals from
depth, the conversion to the shared HDF5 contract, training on it and the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from roaming.cli import main
from roaming.data.dense import NYUV2_CLASSES, write_dense_fixture
from roaming.data.nyuv2_raw import (
    CLASSES40,
    LABELS13,
    MAP13_FILE,
    MAP40_FILE,
    MAT_FILE,
    SPLITS_FILE,
    normals_from_depth,
    prepare_nyuv2_raw,
    read_class_mapping,
    scaled_intrinsics,
    write_nyuv2_raw_fixture,
)
from roaming.data.splits import read_attributes
from roaming.errors import ConfigError, DataError
from roaming.evaluate import evaluate
from roaming.train import TrainConfig, train


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nyuv2") / "raw"
    write_nyuv2_raw_fixture(root, seed=3)
    return root


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    """A private copy that the test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "raw"))


@pytest.fixture(scope="module")
def native(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture prepared at its own 120×160 size."""
    out = tmp_path_factory.mktemp("native") / "n.h5"
    prepare_nyuv2_raw(pristine, out, size=None, progress=False)
    return out


def _mat(root: Path) -> h5py.File:
    return h5py.File(root / MAT_FILE, "r")


def test_fixture_is_a_matlab_v73_file(pristine: Path) -> None:
    header = (pristine / MAT_FILE).read_bytes()[:128]
    assert header.startswith(b"MATLAB 7.3 MAT-file") and header[124:] == b"\x00\x02IM"
    assert scipy.io.matlab.matfile_version(pristine / MAT_FILE) == (2, 0)
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(pristine / MAT_FILE)
    with _mat(pristine) as file:
        assert file["images"].shape == (12, 3, 160, 120) and file["images"].dtype == np.uint8
        for key in ("depths", "rawDepths", "labels", "instances"):
            assert file[key].shape == (12, 160, 120)
        assert file["labels"].dtype == np.uint16 and file["depths"].dtype == np.float32
        assert file["labels"].attrs["MATLAB_class"] == b"uint16"
        assert file["names"].shape == (1, 894) and "namesToIds" not in file
        name = "".join(map(chr, file[file["names"][0, 41]][()].ravel()))
        assert name == "class_042"
        depths, holes = file["depths"][()], file["rawDepths"][()]
        labels = file["labels"][()]
    assert depths.min() > 0.5 and depths.max() < 9.5
    assert 0.02 < np.mean(holes == 0) < 0.08
    np.testing.assert_array_equal(holes[holes > 0], depths[holes > 0])
    assert 0.01 < np.mean(labels == 0) < 0.2 and labels.max() <= 894

    splits = scipy.io.loadmat(pristine / SPLITS_FILE)
    train_ids, test_ids = splits["trainNdxs"].ravel(), splits["testNdxs"].ravel()
    assert splits["trainNdxs"].shape == (8, 1) and splits["testNdxs"].shape == (4, 1)
    assert sorted([*train_ids, *test_ids]) == list(range(1, 13))  # 1-based, disjoint, covering
    map40 = scipy.io.loadmat(pristine / MAP40_FILE, simplify_cells=True)
    assert sorted(set(map40["mapClass"].tolist())) == list(range(1, 41))
    assert tuple(map40["className"]) == CLASSES40
    map13 = scipy.io.loadmat(pristine / MAP13_FILE, simplify_cells=True)["classMapping13"]
    assert tuple(map13["labels13"]) == LABELS13 and tuple(map13["classNames"]) == NYUV2_CLASSES


def test_real_40_to_13_table_by_name() -> None:
    expected = {
        "wall": "wall", "floor": "floor", "ceiling": "ceiling", "bed": "bed", "chair": "chair",
        "sofa": "sofa", "table": "table", "desk": "table", "window": "window", "blinds": "window",
        "books": "books", "picture": "picture", "television": "tv", "cabinet": "furniture",
        "lamp": "objects", "otherprop": "objects", "otherfurniture": "furniture",
    }  # fmt: skip
    for name40, name13 in expected.items():
        assert NYUV2_CLASSES[LABELS13[CLASSES40.index(name40)] - 1] == name13


def test_class_mapping_composes_894_to_40_to_13(pristine: Path) -> None:
    table = read_class_mapping(pristine)
    map40 = scipy.io.loadmat(pristine / MAP40_FILE, simplify_cells=True)["mapClass"]
    assert table.shape == (895,) and table.dtype == np.int16 and table[0] == -1
    for raw_id in (1, 2, 100, 894):
        assert table[raw_id] == LABELS13[map40[raw_id - 1] - 1] - 1
    assert set(table[1:].tolist()) == set(range(13))


def test_round_trip_default_size(pristine: Path, tmp_path: Path) -> None:
    out = tmp_path / "n.h5"
    prepare_nyuv2_raw(pristine, out, progress=False)
    attrs = read_attributes(out)
    assert attrs["dataset"] == "nyuv2" and attrs["source_format"] == "nyu_labeled_mat"
    assert attrs["image_hw"] == [288, 384] and attrs["class_names"] == list(NYUV2_CLASSES)
    pre = attrs["preprocess"]
    assert pre["source_hw"] == [120, 160] and pre["depth_source"] == "depths"
    assert pre["normals_source"] == "computed_from_depth"
    assert pre["intrinsics_fx_fy_cx_cy"] == pytest.approx(list(scaled_intrinsics((120, 160))))
    splits = scipy.io.loadmat(pristine / SPLITS_FILE)
    with h5py.File(out) as file:
        for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
            group, n = file[split], splits[key].size
            assert group["images"].shape == (n, 288, 384, 3)
            assert group["seg"].dtype == np.int16 and group["depth"].dtype == np.float32
            assert group["normals"].shape == (n, 288, 384, 3)
            assert group["normals"].chunks == (1, 288, 384, 3)
            assert group["index"][()].tolist() == splits[key].ravel().tolist()
        assert file["train/normals"].attrs["source"] == "computed_from_depth"
        assert file["train/depth"].attrs["kind"] == "metric_m"
        seg, depth = file["train/seg"][()], file["train/depth"][()]
        norms = np.linalg.norm(file["train/normals"][()], axis=-1)
    assert seg.min() == -1 and seg.max() <= 12
    assert depth.min() > 0  # in-painted depth has no holes
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))


def test_native_size_is_the_mat_transposed_and_mapped(pristine: Path, native: Path) -> None:
    table = read_class_mapping(pristine)
    with _mat(pristine) as mat, h5py.File(native) as file:
        k = int(file["test/index"][1])
        np.testing.assert_array_equal(
            file["test/images"][1], mat["images"][k - 1].transpose(2, 1, 0)
        )
        np.testing.assert_array_equal(file["test/seg"][1], table[mat["labels"][k - 1].T])
        np.testing.assert_array_equal(file["test/depth"][1], mat["depths"][k - 1].T)


def _interior(mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels whose whole (2·margin+1)² neighbourhood lies in ``mask``."""
    out = mask.copy()
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            out &= np.roll(mask, (dy, dx), axis=(0, 1))
    out[:margin], out[-margin:], out[:, :margin], out[:, -margin:] = False, False, False, False
    return out


def test_computed_normals_of_the_rooms_planes(native: Path) -> None:
    """Floor up, ceiling down, wall and boxes facing the camera (MTAN's x right, y up, z out)."""
    with h5py.File(native) as file:
        seg, normals = file["train/seg"][()], file["train/normals"][()]
    expected = {"floor": (0, 1, 0), "ceiling": (0, -1, 0), "wall": (0, 0, 1), "bed": (0, 0, 1)}
    for name, vector in expected.items():
        inside = np.stack([_interior(s == NYUV2_CLASSES.index(name)) for s in seg])
        assert inside.sum() > 50, name
        assert np.mean(np.abs(normals[inside] - vector).max(-1) < 1e-3) > 0.95, name


@settings(max_examples=40, deadline=None)
@given(
    normal=st.tuples(*[st.floats(-1, 1)] * 2).filter(lambda v: v[0] ** 2 + v[1] ** 2 < 0.8),
    distance=st.floats(0.5, 5.0),
)
def test_normals_from_depth_recover_a_plane(normal: tuple[float, float], distance: float) -> None:
    """Depth of the plane n·P = −d seen through a pinhole gives back n (converted to MTAN's
    axes) at every pixel, and only unit or zero vectors."""
    nx, ny = normal
    n = np.array([nx, ny, -np.sqrt(1 - nx * nx - ny * ny)])  # faces the camera (z forward)
    fx, fy, cx, cy = 40.0, 42.0, 15.5, 11.5
    v, u = np.mgrid[0:24, 0:32].astype(float)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
    depth = -distance / (rays @ n)
    depth[depth <= 0] = 0.0
    out = normals_from_depth(depth, (fx, fy, cx, cy))
    valid = np.linalg.norm(out, axis=-1) > 0
    ok = _interior(depth > 0, 1)
    assert np.all(valid[ok])
    expected = n * np.array([1, -1, -1])
    np.testing.assert_allclose(out[valid], np.broadcast_to(expected, out[valid].shape), atol=1e-4)


def test_normals_from_depth_invalid_pixels() -> None:
    depth = np.full((8, 10), 3.0)
    depth[4, 5] = 0
    out = normals_from_depth(depth, scaled_intrinsics((8, 10)))
    zero = np.linalg.norm(out, axis=-1) == 0
    assert zero.sum() == 5 and zero[4, 5] and zero[3, 5] and zero[5, 5] and zero[4, 4]
    np.testing.assert_allclose(out[~zero], np.broadcast_to([0, 0, 1], out[~zero].shape), atol=1e-6)


def test_raw_depth_keeps_holes(pristine: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    prepare_nyuv2_raw(pristine, out, size=(96, 128), depth="raw", progress=False)
    assert read_attributes(out)["preprocess"]["depth_source"] == "rawDepths"
    with h5py.File(out) as file:
        depth, normals = file["train/depth"][()], file["train/normals"][()]
    holes = depth == 0
    assert 0.02 < holes.mean() < 0.08
    assert np.all(normals[holes] == 0)


def test_external_normals(raw: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = raw / "normals"
    folder.mkdir()
    supplied = {}
    for k in range(1, 13):
        vectors = rng.normal(size=(120, 160, 3))
        supplied[k] = (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)
        np.save(folder / f"{k}.npy", supplied[k])
    out = tmp_path / "e.h5"
    prepare_nyuv2_raw(raw, out, size=None, progress=False)
    with h5py.File(out) as file:
        assert file["train/normals"].attrs["source"] == "external"
        k = int(file["train/index"][2])
        np.testing.assert_array_equal(file["train/normals"][2], supplied[k])
    assert "intrinsics_fx_fy_cx_cy" not in read_attributes(out)["preprocess"]
    (folder / "7.npy").unlink()
    with pytest.raises(DataError, match="missing") as info:
        prepare_nyuv2_raw(raw, tmp_path / "f.h5", progress=False)
    assert info.value.path == folder / "7.npy"


def test_fixture_is_learnable_and_deterministic(pristine: Path, tmp_path: Path) -> None:
    """Pixel colours predict the 13-class label (nearest class mean) almost everywhere, and the
    same seed gives the same prepared data."""
    prepare_nyuv2_raw(pristine, tmp_path / "a.h5", size=None, progress=False)
    write_nyuv2_raw_fixture(tmp_path / "b", seed=3)
    prepare_nyuv2_raw(tmp_path / "b", tmp_path / "b.h5", size=None, progress=False)
    write_nyuv2_raw_fixture(tmp_path / "c", seed=4)
    prepare_nyuv2_raw(tmp_path / "c", tmp_path / "c.h5", size=None, progress=False)
    prints = [read_attributes(tmp_path / f"{x}.h5")["fingerprint"] for x in "abc"]
    assert prints[0] == prints[1] != prints[2]
    with h5py.File(tmp_path / "a.h5") as file:
        colours = file["train/images"][()].reshape(-1, 3).astype(float)
        seg = file["train/seg"][()].reshape(-1)
    keep = seg >= 0
    colours, seg = colours[keep], seg[keep]
    present = np.unique(seg)
    means = np.stack([colours[seg == c].mean(0) for c in present])
    predicted = present[np.argmin(((colours[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    assert np.mean(predicted == seg) > 0.95


def _overlapping_splits(root: Path) -> Path:
    path = root / SPLITS_FILE
    scipy.io.savemat(path, {"trainNdxs": [[1], [2], [3]], "testNdxs": [[3], [4]]})
    return path


def _split_out_of_range(root: Path) -> Path:
    path = root / SPLITS_FILE
    scipy.io.savemat(path, {"trainNdxs": [[1], [2]], "testNdxs": [[13]]})
    return path


def _empty_splits(root: Path) -> Path:
    path = root / SPLITS_FILE
    path.write_bytes(b"")
    return path


def _short_mapping(root: Path) -> Path:
    path = root / MAP40_FILE
    path.write_bytes(b"MATLAB 5.0")
    return path


def _missing_mapping(root: Path) -> Path:
    path = root / MAP40_FILE
    path.unlink()
    return path


def _v73_mapping(root: Path) -> Path:
    path = root / MAP13_FILE
    shutil.copy(root / MAT_FILE, path)
    return path


def _reordered_names(root: Path) -> Path:
    path = root / MAP13_FILE
    names = np.empty((1, 13), dtype=object)
    names[0, :] = sorted(NYUV2_CLASSES, reverse=True)
    scipy.io.savemat(path, {"classMapping13": {"labels13": [LABELS13], "classNames": names}})
    return path


def _unknown_label(root: Path) -> Path:
    path = root / MAT_FILE
    with h5py.File(path, "r+") as file:
        file["labels"][0, 3, 3] = 900
    return path


def _nan_depth(root: Path) -> Path:
    path = root / MAT_FILE
    with h5py.File(path, "r+") as file:
        file["depths"][5, 3, 3] = np.nan
    return path


def _names_mismatch(root: Path) -> Path:
    path = root / MAP40_FILE
    data = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    scipy.io.savemat(path, {**data, "mapClass": data["mapClass"][:, :800]})
    return root / MAT_FILE


def _v5_labeled(root: Path) -> Path:
    path = root / MAT_FILE
    path.unlink()
    scipy.io.savemat(path, {"depths": np.ones((4, 4))})
    return path


def _no_labels(root: Path) -> Path:
    path = root / MAT_FILE
    with h5py.File(path, "r+") as file:
        del file["labels"]
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_overlapping_splits, "share image 3"),
        (_split_out_of_range, "testNdxs values must be whole numbers in 1…12"),
        (_missing_mapping, "not found"),
        (_empty_splits, "not a readable MATLAB file"),
        (_short_mapping, "not a readable MATLAB file"),
        (_v73_mapping, "saved as MATLAB v7.3"),
        (_reordered_names, "MTAN's order"),
        (_unknown_label, "label 900 exceeds the 894 classes"),
        (_nan_depth, "depths must be finite"),
        (_names_mismatch, "names lists 894 classes but classMapping40.mat maps 800"),
        (_v5_labeled, "a MATLAB v5 file"),
        (_no_labels, "no variable 'labels'"),
    ],
)
def test_bad_input(raw: Path, tmp_path: Path, damage: Callable[[Path], Path], message: str) -> None:
    path = damage(raw)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DataError, match=message) as info:
        prepare_nyuv2_raw(raw, out_dir / "n.h5", size=(32, 32), progress=False)
    assert info.value.path == path
    assert not any(out_dir.iterdir())


def test_bad_arguments(pristine: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown NYUv2 depth"):
        prepare_nyuv2_raw(pristine, tmp_path / "n.h5", depth="metric_m", progress=False)
    with pytest.raises(ConfigError, match="at least 32"):
        write_nyuv2_raw_fixture(tmp_path / "f", seed=0, height=16)
    assert not (tmp_path / "n.h5").exists() and not (tmp_path / "f").exists()


def test_mr_trains_and_evaluates_on_raw_prepared_data(pristine: Path, tmp_path: Path) -> None:
    data = tmp_path / "n.h5"
    prepare_nyuv2_raw(pristine, data, size=(32, 64), progress=False)
    config = TrainConfig(data=data, method="mr", out=tmp_path / "run", epochs=2, batch_size=4,
                         width=0.125, sharing=0.5, device="cpu")  # fmt: skip
    train(config, progress=False)
    metrics = evaluate(tmp_path / "run", data, "test", tmp_path / "test.json", device="cpu")
    assert {"miou", "binary_iou", "depth_abs_err", "normal_mean"} <= set(metrics)
    assert json.loads((tmp_path / "test.json").read_text())["miou"] == metrics["miou"]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    main(["fixtures", "nyuv2", "--format", "raw", "--out", str(raw), "--n-train", "3",
          "--n-test", "2", "--height", "48", "--width", "64"])  # fmt: skip
    assert scipy.io.loadmat(raw / SPLITS_FILE)["testNdxs"].size == 2
    main(["prepare", "nyuv2", "--raw", str(raw), "--out", str(tmp_path / "a.h5"), "--quiet"])
    attrs = read_attributes(tmp_path / "a.h5")
    assert attrs["source_format"] == "nyu_labeled_mat" and attrs["image_hw"] == [288, 384]
    main(["prepare", "nyuv2", "--raw", str(raw), "--out", str(tmp_path / "b.h5"), "--size", "32",
          "64", "--depth", "raw", "--quiet"])  # fmt: skip
    attrs = read_attributes(tmp_path / "b.h5")
    assert attrs["image_hw"] == [32, 64] and attrs["preprocess"]["depth_source"] == "rawDepths"

    write_dense_fixture(tmp_path / "mtan", dataset="nyuv2", seed=0, n_train=2, n_test=1)
    main(["prepare", "nyuv2", "--raw", str(tmp_path / "mtan"), "--out", str(tmp_path / "m.h5"),
          "--quiet"])  # fmt: skip
    assert read_attributes(tmp_path / "m.h5")["source_format"] == "mtan_npy"
    for args, message in (
        (["--raw", str(tmp_path / "mtan"), "--depth", "raw"], "--depth applies to raw releases"),
        (["--raw", str(raw), "--depth", "metric_m"], "unknown NYUv2 depth 'metric_m'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "nyuv2", "--out", str(tmp_path / "x.h5"), "--quiet", *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fixtures", "nyuv2", "--format", "raw", "--n-val", "2", "--out", str(tmp_path / "v")])
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "v").exists()
