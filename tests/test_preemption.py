"""A stop signal mid-epoch (SLURM's preemption SIGTERM, or the SIGUSR1 warning before a time
limit) writes a checkpoint at the next batch boundary; the rerun resumes mid-epoch and ends
bitwise where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import roaming.train
from roaming.cli import main
from roaming.evaluate import evaluate

CELEBA = ["--epochs", "2", "--batch-size", "32", "--width", "0.125", "--lr", "5e-3"]
DENSE = ["--epochs", "2", "--batch-size", "8", "--width", "0.125", "--lr", "5e-3"]
COMMON = ["--device", "cpu", "--threads", "1", "--quiet"]


def _command(data: Path, out: Path, options: list[str]) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), *options, *COMMON]


def _signal_at(monkeypatch: pytest.MonkeyPatch, iteration: int, signum: int) -> None:
    """Deliver ``signum`` to this process during the step of ``iteration`` (1-based)."""
    step = roaming.train.Trainer.step

    def step_then_signal(trainer, batch):
        if trainer.iteration + 1 == iteration:
            os.kill(os.getpid(), signum)
        return step(trainer, batch)

    monkeypatch.setattr(roaming.train.Trainer, "step", step_then_signal)


@pytest.mark.parametrize(
    ("dataset", "options", "iteration", "signum"),
    [
        # CelebA: 12 batches an epoch, per-task steps, a roaming event every 2 iterations
        ("celeba", ["--method", "mr", "--sharing", "0.5", "--update-interval", "0.1"], 17,
         signal.SIGTERM),
        # NYUv2: 8 batches an epoch, MGDA-UB's epoch-mean weights, dense meters
        ("nyuv2", ["--method", "mgda"], 11, signal.SIGUSR1),
    ],
)  # fmt: skip
def test_a_signal_mid_epoch_checkpoints_and_the_rerun_resumes_bitwise(
    request, tmp_path, monkeypatch, capsys, dataset, options, iteration, signum
):
    data = request.getfixturevalue(f"{dataset}_h5")
    shape = CELEBA if dataset == "celeba" else DENSE
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    main(_command(data, reference, [*options, *shape]))

    with monkeypatch.context() as patch:
        _signal_at(patch, iteration, signum)
        with pytest.raises(SystemExit) as exit_info:
            main(_command(data, stopped, [*options, *shape]))
    assert exit_info.value.code == 128 + signum
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"stopped by {signal.Signals(signum).name} in epoch 2" in err[0]
    assert "checkpoint written, run the same command to resume" in err[0]
    assert not (stopped / "model.pt").exists()
    state = torch.load(stopped / "checkpoint.pt", weights_only=True)
    batches = state["epoch_progress"]["batches"]
    assert state["epoch"] == 1 and state["iteration"] == iteration  # stopped right after it
    assert state["epoch_progress"]["position"] == iteration - batches

    main(_command(data, stopped, [*options, *shape]))
    assert "resuming in epoch 2 after batch" in capsys.readouterr().out
    for run in (reference, stopped):
        evaluate(run, data, "test", run / "test.json", device="cpu")
    assert (reference / "test.json").read_bytes() == (stopped / "test.json").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_csv(stopped / "history.csv").drop(columns="seconds"),
        pd.read_csv(reference / "history.csv").drop(columns="seconds"),
    )


def test_a_real_sigterm_to_the_command_stops_it_cleanly(celeba_h5, tmp_path):
    """The process itself, signalled from outside as SLURM does, exits 143 with a checkpoint."""
    out = tmp_path / "run"
    options = ["--method", "mr", "--sharing", "0.5", "--epochs", "30", "--width", "0.125"]
    command = [sys.executable, "-m", "roaming", *_command(celeba_h5, out, options)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not (out / "model.pt").exists() and (out / "checkpoint.pt").exists()
