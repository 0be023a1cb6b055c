"""Faults injected as a hostile user (or an unlucky cluster) would: each ends with one line
naming the file and the cause and exit status 2, or with a correct result; never a traceback,
a wrong number with status 0, or a half-written file taken as done."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
import torch

from roaming.data.celeba import prepare_celeba
from roaming.data.celeba_fixtures import write_celeba_fixture

TINY = ["--epochs", "2", "--batch-size", "32", "--width", "0.125", "--lr", "5e-3"]
TINY += ["--device", "cpu", "--threads", "1", "--quiet"]


def roaming(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real command line, in a fresh process: its exit status and streams."""
    return subprocess.run(
        [sys.executable, "-m", "roaming", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fails(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Assert exit status 2 with one line on stderr holding ``fragments``; return the line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def train_args(data: Path, out: Path, method: str = "mtl", *extra: str) -> list[str | Path]:
    return ["train", "--data", data, "--out", out, "--method", method, *TINY, *extra]


@pytest.fixture
def data(celeba_h5: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared synthetic CelebA, free to damage."""
    return Path(shutil.copy(celeba_h5, tmp_path / "celeba.h5"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, celeba_h5: Path) -> Path:
    """A finished, evaluated MR run (copied by the tests that damage it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert roaming(*train_args(celeba_h5, out, "mr", "--sharing", "0.5")).returncode == 0
    result = roaming("evaluate", "--run", out, "--data", celeba_h5, "--out", out / "m.json")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def run_copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


# -- damaged data -------------------------------------------------------------------------------


def test_a_flipped_byte_in_an_image_chunk_fails_the_read(data: Path, tmp_path: Path) -> None:
    with h5py.File(data) as file:
        chunk = file["train/images"].id.get_chunk_info(3)
    with data.open("r+b") as raw:
        raw.seek(chunk.byte_offset + chunk.size // 2)
        byte = raw.read(1)
        raw.seek(-1, os.SEEK_CUR)
        raw.write(bytes([byte[0] ^ 0x10]))
    out = tmp_path / "run"
    fails(roaming(*train_args(data, out)), str(data), "/train/images", "checksum mismatch")
    assert not (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()


def test_data_rewritten_behind_the_checksums_is_caught(data: Path, tmp_path: Path) -> None:
    """HDF5 recomputes chunk checksums on a write; the per-dataset digest still notices."""
    with h5py.File(data, "r+") as file:
        file["train/attributes"][0, 0] ^= 1
    fails(roaming(*train_args(data, tmp_path / "run")), "/train/attributes", "checksum record")


def test_a_truncated_data_file_is_one_line(data: Path, tmp_path: Path) -> None:
    os.truncate(data, data.stat().st_size // 2)
    fails(roaming(*train_args(data, tmp_path / "run")), str(data), "not a readable HDF5 file")


def test_a_damaged_header_is_one_line(data: Path, tmp_path: Path) -> None:
    with data.open("r+b") as raw:
        raw.write(b"\0" * 8)  # the HDF5 signature
    fails(roaming(*train_args(data, tmp_path / "run")), str(data), "not a readable HDF5 file")


def test_a_tampered_fingerprint_is_caught(data: Path, tmp_path: Path) -> None:
    with h5py.File(data, "r+") as file:
        file.attrs["fingerprint"] = "0" * 64
    fails(roaming(*train_args(data, tmp_path / "run")), str(data), "fingerprint does not match")


# -- preset and data-source isolation -----------------------------------------------------------


def test_a_run_configured_for_real_data_refuses_a_synthetic_file(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    line = fails(roaming(*train_args(data, out, "mtl", "--data-source", "real")), str(data))
    assert "holds synthetic data" in line and "configured for real data" in line
    assert not out.exists()


# -- non-finite values --------------------------------------------------------------------------


def test_a_diverging_run_stops_at_once_and_is_never_complete(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = fails(roaming(*train_args(data, out, "mtl", "--lr", "1e30")), str(out))
    assert "loss of task" in line and "epoch 1, iteration" in line
    assert not (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()


def test_evaluating_non_finite_outputs_writes_no_metrics(run_copy: Path, celeba_h5: Path) -> None:
    for name in ("model.pt", "checkpoint.pt"):
        state = torch.load(run_copy / name, weights_only=True)
        state["model"]["heads.0.bias"][0] = float("nan")
        torch.save(state, run_copy / name)
    out = run_copy / "nan.json"
    result = roaming("evaluate", "--run", run_copy, "--data", celeba_h5, "--out", out)
    fails(result, str(run_copy), "NaN or infinite", "no metrics written")
    assert not out.exists()


# -- one writer, consistent records -------------------------------------------------------------


def _start_training(data: Path, out: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "roaming", *map(str, train_args(data, out, "mr"))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((out / "train.lock").exists() and (out / "train.lock").read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    return process


def test_a_second_writer_is_refused_and_a_dead_holder_taken_over(
    celeba_h5: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = _start_training(celeba_h5, out)
    try:
        second = roaming(*train_args(celeba_h5, out, "mr", "--sharing", "0.25"))
        line = fails(second, str(out), f"already being trained by process {first.pid} on")
        assert "wait for it to finish" in line
        evaluated = roaming("evaluate", "--run", out, "--data", celeba_h5, "--out", out / "m.json")
        fails(evaluated, str(out), "still being trained")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert not (out / "model.pt").exists(), "killed too late"
    third = roaming(*train_args(celeba_h5, out, "mr"))
    assert third.returncode == 0, third.stderr
    assert f"taking over the lock of process {first.pid}" in third.stdout
    assert (out / "model.pt").exists() and (out / "train.lock").read_text() == ""


def test_a_hand_edited_config_is_refused_by_evaluate_naming_both_files(
    run_copy: Path, celeba_h5: Path
) -> None:
    config = json.loads((run_copy / "config.json").read_text())
    config["sharing"] = 0.9
    (run_copy / "config.json").write_text(json.dumps(config))
    out = run_copy / "again.json"
    result = roaming("evaluate", "--run", run_copy, "--data", celeba_h5, "--out", out)
    fails(result, str(run_copy / "config.json"), str(run_copy / "model.pt"), "sharing")
    assert not out.exists()


def test_an_edited_checkpoint_epoch_is_refused(run_copy: Path, celeba_h5: Path) -> None:
    (run_copy / "model.pt").unlink()  # so the checkpoint is what a rerun reads
    state = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    state["epoch"] = 1
    torch.save(state, run_copy / "checkpoint.pt")
    result = roaming(*train_args(celeba_h5, run_copy, "mr", "--sharing", "0.5"))
    fails(result, str(run_copy / "checkpoint.pt"), "inconsistent", "--restart")
    assert not (run_copy / "model.pt").exists()


def test_a_truncated_checkpoint_says_how_to_start_over(run_copy: Path, celeba_h5: Path) -> None:
    path = run_copy / "checkpoint.pt"
    os.truncate(path, path.stat().st_size // 3)
    again = train_args(celeba_h5, run_copy, "mr", "--sharing", "0.5")
    finished = roaming(*again)  # model.pt is intact: the finished run is not blocked
    assert finished.returncode == 0 and "nothing to do" in finished.stdout
    (run_copy / "model.pt").unlink()
    fails(roaming(*again), str(path), "damaged or truncated", "--restart")
    restarted = roaming(*again, "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert (run_copy / "model.pt").exists()


def test_a_garbage_model_file_is_one_line_without_unsafe_advice(
    run_copy: Path, celeba_h5: Path
) -> None:
    (run_copy / "model.pt").write_bytes(b"PK\3\4 this is not a checkpoint" * 10)
    result = roaming("evaluate", "--run", run_copy, "--data", celeba_h5, "--out", "m.json")
    fails(result, str(run_copy / "model.pt"), "damaged or truncated")


# -- interrupted writes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bigger_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release") / "raw"
    write_celeba_fixture(root, seed=3, n_train=1500, n_val=20, n_test=20, layout="drive")
    return root


def test_prepare_killed_mid_write_leaves_nothing_and_the_next_run_cleans_up(
    bigger_release: Path, tmp_path: Path
) -> None:
    out = tmp_path / "celeba.h5"
    command = [sys.executable, "-m", "roaming", "prepare", "celeba", "--raw", str(bigger_release)]
    process = subprocess.Popen([*command, "--out", str(out), "--quiet"])
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 1 << 20 for p in tmp_path.glob(".celeba.h5.*.tmp")):
        assert process.poll() is None and time.monotonic() < deadline, "prepare did not write"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert len(list(tmp_path.glob(".celeba.h5.*.tmp"))) == 1  # the orphan
    prepare_celeba(bigger_release, out, progress=False)
    assert out.is_file() and list(tmp_path.glob(".*.tmp")) == []


# -- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs (needs root): writes fill it for real."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Leave about ``leave`` bytes free on ``disk``."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with (disk / f"filler{len(list(disk.glob('filler*')))}").open("wb") as filler:
        filler.write(b"\0" * max(0, free - leave))


def test_every_verb_on_a_full_disk_is_one_line_and_leaves_no_file(
    small_disk: Path, bigger_release: Path, celeba_h5: Path, finished: Path
) -> None:
    data = Path(shutil.copy(celeba_h5, small_disk / "data.h5"))
    _fill(small_disk, 6 << 20)
    prepared = small_disk / "celeba.h5"
    result = roaming("prepare", "celeba", "--raw", bigger_release, "--out", prepared, "--quiet")
    fails(result, str(prepared), "no space left on device")
    fixtures = small_disk / "fixtures"
    fails(roaming("fixtures", "celeba", "--out", fixtures, "--n-train", "3000"),
          str(fixtures), "no space left on device")  # fmt: skip
    _fill(small_disk, 0)
    run = small_disk / "run"
    fails(roaming(*train_args(data, run)), str(run), "no space left on device")
    metrics = small_disk / "m.json"
    fails(roaming("evaluate", "--run", finished, "--data", celeba_h5, "--out", metrics),
          str(metrics), "no space left on device")  # fmt: skip
    leftovers = {p.name for p in small_disk.rglob("*") if not p.name.startswith("filler")}
    leftovers -= {"data.h5", "run"}
    assert leftovers <= {"train.lock", "config.json"}, leftovers
    assert not prepared.exists() and not fixtures.exists() and not metrics.exists()
