"""Training and evaluation end to end on the synthetic CelebA: learning, determinism, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch

import roaming.train
from roaming.cli import main
from roaming.config import default_compute
from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUPS, prepare_celeba
from roaming.data.celeba_fixtures import write_celeba_fixture
from roaming.data.splits import Split, load_split, read_attributes
from roaming.datasets import get_dataset
from roaming.evaluate import evaluate
from roaming.train import TrainConfig, Trainer, resolve_request, train

TINY = {"epochs": 3, "batch_size": 32, "width": 0.125, "lr": 5e-3, "device": "cpu"}


def run(data: Path, out: Path, method: str, **options) -> Path:
    """Train a tiny run and return its directory."""
    train(TrainConfig(data=data, method=method, out=out, **(TINY | options)), progress=False)
    return out


def tasks_of(data: Path):
    attrs = read_attributes(data)
    return get_dataset(attrs["dataset"]).tasks(attrs, None, "paper")


def metrics_of(run_dir: Path, data: Path, split: str = "test") -> dict[str, float]:
    return evaluate(run_dir, data, split, run_dir / f"{split}.json", device="cpu")


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("stl", {"task": 2}),
        ("mtl", {"epochs": 12}),
        ("gradnorm", {"epochs": 12}),
        ("mgda", {"epochs": 12}),
        ("se", {}),
        ("tr", {"sharing": 0.5}),
        ("mr", {"sharing": 0.5, "update_interval": 0.25}),
        ("mr", {"sharing": 0.5, "strategy": "least_align"}),
        ("mr", {"sharing": 0.5, "task_steps": "joint", "epochs": 12}),
        ("mr", {"sharing": 0.5, "task_steps": "fused", "epochs": 12}),
    ],
)
def test_every_method_learns_the_synthetic_attributes(celeba_h5, tmp_path, method, options):
    options = {"epochs": 4} | options
    out = run(celeba_h5, tmp_path / method, method, **options)
    metrics = metrics_of(out, celeba_h5)
    # Chance level: predicting every attribute positive gives F ≈ 0.6 and accuracy ≈ 0.5.
    assert metrics["fscore"] > 0.8
    assert metrics["accuracy"] > 0.85
    history = pd.read_csv(out / "history.csv")
    assert list(zip(history.epoch, history.split, strict=True)) == [
        (e, s) for e in range(1, options["epochs"] + 1) for s in ("train", "val")
    ]
    first, last = history[history.split == "train"].loss.iloc[[0, -1]]
    assert last < first


def test_a_non_finite_evaluation_names_the_checkpoint_on_disk(celeba_h5, tmp_path, monkeypatch):
    """Evaluation after epoch 2 finds NaN outputs: training stops, and the message names the
    checkpoint it keeps, epoch 1's (epoch 2 was trained but never written)."""
    evaluations = []

    def predict(*args, **kwargs):
        evaluations.append(len(evaluations))
        if len(evaluations) == 2:
            raise roaming.train.NonFiniteError("the model's outputs hold NaN")
        return real_predict(*args, **kwargs)

    real_predict = roaming.train.predict
    monkeypatch.setattr(roaming.train, "predict", predict)
    with pytest.raises(roaming.train.NonFiniteError, match="the checkpoint of epoch 1 is kept"):
        run(celeba_h5, tmp_path / "run", "mtl")
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1


def _epoch_trainer(data: Path, tmp_path: Path, method: str, device: str, **options) -> Trainer:
    config = TrainConfig(data, method, tmp_path, **(TINY | {"device": device} | options))
    return Trainer(resolve_request(config)[0], tasks_of(data), torch.device(device))


def _first(split: Split, samples: int) -> Split:
    return Split(split.images[:samples], {k: v[:samples] for k, v in split.targets.items()})


def test_a_non_finite_loss_is_caught_one_batch_later_and_named(celeba_h5, tmp_path):
    """Batch 2's losses are read once batch 3 is under way, and the error names batch 2."""
    trainer = _epoch_trainer(celeba_h5, tmp_path, "mtl", "cpu", batch_size=16)
    split = _first(load_split(celeba_h5, "train", trainer.tasks.fields), 5 * 16)
    steps, real_step = [], trainer.step

    def step(batch):
        steps.append(len(steps) + 1)
        results = real_step(batch)
        return [(o, v * math.nan if len(steps) == 2 else v) for o, v in results]

    trainer.step = step
    with pytest.raises(roaming.train.NonFiniteError, match="is nan at epoch 1, iteration 2:"):
        trainer.train_epoch(split, progress=False)
    assert steps == [1, 2, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("dataset", "method", "options"),
    [
        ("celeba", "mtl", {}),
        ("celeba", "se", {}),
        ("celeba", "tr", {}),
        ("celeba", "tr", {"compute": "skip"}),
        ("nyuv2", "mtl", {}),
        ("nyuv2", "tr", {"compute": "skip"}),
    ],
)
def test_training_batches_never_wait_for_the_gpu(request, tmp_path, dataset, method, options):
    """An epoch synchronises with the GPU a fixed number of times (its order, its summary),
    never once per batch: one of 6 batches as often as one of 2 (PyTorch's sync debug mode
    warns at every synchronising call)."""
    data, size = request.getfixturevalue(f"{dataset}_h5"), 16 if dataset == "celeba" else 8
    trainer = _epoch_trainer(data, tmp_path, method, "cuda", batch_size=size, **options)
    split = load_split(data, "train", trainer.tasks.fields).to("cuda")

    def synchronisations(batches: int) -> int:
        part = _first(split, batches * size)
        trainer.train_epoch(part, progress=False)  # lazy initialisation, caches
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.train_epoch(part, progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert synchronisations(6) == synchronisations(2)


def test_single_task_run_reports_only_its_group(celeba_h5, tmp_path):
    out = run(celeba_h5, tmp_path / "stl", "stl", task=4, epochs=1)
    metrics = metrics_of(out, celeba_h5)
    reported = {key.split("/", 1)[1] for key in metrics if key.startswith("fscore/")}
    assert reported == {ATTRIBUTE_NAMES[i] for i in TASK_GROUPS[4]}
    assert set(json.loads((out / "test.json").read_text())) == set(metrics)


def test_same_seed_gives_bitwise_identical_metrics(celeba_h5, tmp_path):
    options = {"sharing": 0.5, "update_interval": 0.2, "epochs": 2}
    first = run(celeba_h5, tmp_path / "a", "mr", **options)
    second = run(celeba_h5, tmp_path / "b", "mr", **options)
    other_seed = run(celeba_h5, tmp_path / "c", "mr", seed=1, **options)
    for directory in (first, second, other_seed):
        metrics_of(directory, celeba_h5)
    assert (first / "test.json").read_bytes() == (second / "test.json").read_bytes()
    assert (first / "test.json").read_bytes() != (other_seed / "test.json").read_bytes()


def _train_command(data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "roaming", "train", "--data", str(data), "--out", str(out),
        "--method", "mr", "--sharing", "0.5", "--update-interval", "0.2", "--epochs", "4",
        "--batch-size", "32", "--width", "0.125", "--lr", "5e-3", "--device", "cpu", "--quiet",
    ]  # fmt: skip


def test_run_killed_mid_training_resumes_to_identical_metrics(celeba_h5, tmp_path):
    reference = tmp_path / "uninterrupted"
    subprocess.run(_train_command(celeba_h5, reference), check=True, capture_output=True)

    resumed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(celeba_h5, resumed), stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (resumed / "checkpoint.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "model.pt").exists(), "killed too late to test resuming"

    again = subprocess.run(
        _train_command(celeba_h5, resumed), check=True, capture_output=True, text=True
    )
    assert "resuming after epoch" in again.stdout
    for directory in (reference, resumed):
        metrics_of(directory, celeba_h5)
    assert (reference / "test.json").read_bytes() == (resumed / "test.json").read_bytes()
    history = pd.read_csv(resumed / "history.csv")
    assert len(history) == 8
    with h5py.File(reference / "masks.h5") as a, h5py.File(resumed / "masks.h5") as b:
        assert list(a) == list(b)
        for name in a:
            assert (a[name]["masks"][()] == b[name]["masks"][()]).all()
            assert (a[name]["iterations"][()] == b[name]["iterations"][()]).all()


@pytest.mark.parametrize("method", ["gradnorm", "mgda", "se"])
def test_baseline_interrupted_between_epochs_resumes_bitwise(
    celeba_h5, tmp_path, monkeypatch, method
):
    """A run stopped after its second checkpoint and started again ends with the same weights,
    loss weights and metrics as one that never stopped."""
    reference = run(celeba_h5, tmp_path / "reference", method)
    summary = roaming.train._summary

    def stop_after_epoch_two(epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt
        return summary(epoch, *args)

    monkeypatch.setattr(roaming.train, "_summary", stop_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run(celeba_h5, tmp_path / "resumed", method)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    monkeypatch.setattr(roaming.train, "_summary", summary)
    resumed = run(celeba_h5, tmp_path / "resumed", method)
    for directory in (reference, resumed):
        metrics_of(directory, celeba_h5)
    assert (reference / "test.json").read_bytes() == (resumed / "test.json").read_bytes()
    history = pd.read_csv(resumed / "history.csv")
    pd.testing.assert_frame_equal(
        history.drop(columns="seconds"),
        pd.read_csv(reference / "history.csv").drop(columns="seconds"),
    )
    weights = history.filter(like="weight/")
    assert len(weights.columns) == (0 if method == "se" else 8)
    if method == "gradnorm":  # renormalised to sum to T after every step
        train_rows = weights[history.split == "train"]
        assert train_rows.sum(axis=1).round(4).eq(8).all()
        assert train_rows.std(axis=1).gt(0).all()  # they moved away from 1


def test_run_of_other_training_code_starts_over(celeba_h5, tmp_path, capsys):
    """A finished run (or checkpoint) written by other training code is neither done nor
    resumed: the code fingerprint is part of the run's identity."""
    out = run(celeba_h5, tmp_path / "mtl", "mtl", epochs=1)
    config = json.loads((out / "config.json").read_text())
    assert config["code"] and config["version"] and config["threads"] >= 1
    config["code"] = "0123456789abcdef"
    (out / "config.json").write_text(json.dumps(config))
    for name in ("checkpoint.pt", "model.pt"):
        state = torch.load(out / name, weights_only=True)
        state["config"]["code"] = config["code"]
        torch.save(state, out / name)
    capsys.readouterr()
    run(celeba_h5, out, "mtl", epochs=1)
    printed = capsys.readouterr().out
    assert "configuration changed" in printed and "code: '0123456789abcdef'" in printed
    assert json.loads((out / "config.json").read_text())["code"] != config["code"]
    assert len(pd.read_csv(out / "history.csv")) == 2


def test_forced_retraining_trains_from_scratch(celeba_h5, tmp_path, capsys):
    """Removing model.pt (what `snakemake --forcerun train` does) retrains from scratch instead
    of rewriting model.pt from the finished checkpoint."""
    out = run(celeba_h5, tmp_path / "mtl", "mtl", epochs=1)
    (out / "model.pt").unlink()
    capsys.readouterr()
    run(celeba_h5, out, "mtl", epochs=1)
    printed = capsys.readouterr().out
    assert "training again from scratch" in printed and "resuming" not in printed
    assert (out / "model.pt").exists() and len(pd.read_csv(out / "history.csv")) == 2


@pytest.fixture
def float64():
    """Build models and tensors in float64 for the duration of a test."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("method", ["mr", "se"])
def test_fused_step_matches_the_joint_step(celeba_h5, tmp_path, float64, method):
    """A fused step takes the joint step's gradients. In float64, since float32 rounding
    differences between batch sizes are amplified by tiny-batch BatchNorm to ~1e-3."""
    grads = {}
    for steps in ("joint", "fused"):
        options = TINY | ({"sharing": 0.5} if method == "mr" else {})
        config = TrainConfig(celeba_h5, method, tmp_path / steps, task_steps=steps, **options)
        trainer = Trainer(resolve_request(config)[0], tasks_of(celeba_h5), torch.device("cpu"))
        split = load_split(celeba_h5, "train", trainer.tasks.fields)
        batch = {k: v.double() if v.is_floating_point() else v
                 for k, v in split.batch(torch.arange(16)).items()}  # fmt: skip
        trainer.step(batch)  # the step leaves its gradients in .grad
        grads[steps] = {name: p.grad for name, p in trainer.model.named_parameters()}
    for name, joint in grads["joint"].items():
        torch.testing.assert_close(grads["fused"][name], joint, atol=1e-12, rtol=1e-9, msg=name)
    assert sum(bool(g.any()) for g in grads["joint"].values()) > 20


def test_finished_run_is_left_alone_and_changed_config_starts_over(celeba_h5, tmp_path, capsys):
    out = run(celeba_h5, tmp_path / "mtl", "mtl", epochs=1)
    before = (out / "model.pt").stat().st_mtime_ns
    run(celeba_h5, out, "mtl", epochs=1)
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "model.pt").stat().st_mtime_ns == before
    run(celeba_h5, out, "mtl", epochs=2)
    assert "configuration changed" in capsys.readouterr().out
    assert len(pd.read_csv(out / "history.csv")) == 4


def _masks(path: Path) -> dict[str, tuple]:
    with h5py.File(path) as file:
        return {name: (file[name]["masks"][()], file[name]["iterations"][()]) for name in file}


def test_task_routing_masks_never_change(celeba_h5, tmp_path):
    out = run(celeba_h5, tmp_path / "tr", "tr", sharing=0.5, epochs=2)
    layers = _masks(out / "masks.h5")
    assert len(layers) == 20
    model = torch.load(out / "model.pt", weights_only=True)["model"]
    for name, (masks, iterations) in layers.items():
        assert masks.shape[0] == 1 and list(iterations) == [0]
        assert (model[f"{name}.slot.mask"].numpy() == masks[0]).all()
        assert (model[f"{name}.slot.history"].numpy() == masks[0]).all()


def test_roaming_events_follow_the_reference_schedule(celeba_h5, tmp_path):
    interval = 0.3
    out = run(celeba_h5, tmp_path / "mr", "mr", sharing=0.5, update_interval=interval, epochs=3)
    batches = math.ceil(_train_size(celeba_h5) / 32)
    period = math.floor(interval * batches) + 1
    model = torch.load(out / "model.pt", weights_only=True)["model"]
    for name, (masks, iterations) in _masks(out / "masks.h5").items():
        events = len(iterations) - 1
        channels = masks.shape[2]
        active = masks[0].sum(axis=1)
        budget = int((channels - active).max())
        assert events == min(budget, 3 * batches // period)
        assert list(iterations[1:]) == [period * (k + 1) for k in range(events)]
        assert (masks.sum(axis=2) == active).all(), "per-task active count must not change"
        assert (model[f"{name}.slot.mask"].numpy() == masks[-1]).all()
        if events == budget:
            assert model[f"{name}.slot.history"].all(), f"{name}: Lemma 1 (full coverage)"


def _train_size(data: Path) -> int:
    with h5py.File(data) as file:
        return len(file["train/images"])


def test_predictions_file_has_probabilities_in_attribute_order(celeba_h5, tmp_path):
    out = run(celeba_h5, tmp_path / "stl", "stl", task=3, epochs=1)
    evaluate(out, celeba_h5, "test", out / "m.json", predictions=out / "p.h5", device="cpu")
    with h5py.File(out / "p.h5") as file, h5py.File(celeba_h5) as data:
        probabilities = file["probabilities"][()]
        assert probabilities.dtype.name == "float32" and probabilities.shape[1] == 40
        assert (file["attributes"][()] == data["test/attributes"][()]).all()
    predicted = list(TASK_GROUPS[3])
    assert not torch.isnan(torch.from_numpy(probabilities[:, predicted])).any()
    others = [i for i in range(40) if i not in predicted]
    assert torch.isnan(torch.from_numpy(probabilities[:, others])).all()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "mr", "--sharing", "0"], "--sharing must be in (0, 1]"),
        (["--method", "mr", "--sharing", "1.5"], "--sharing must be in (0, 1]"),
        (["--method", "tr", "--sharing", "-0.2"], "--sharing must be in (0, 1]"),
        (["--method", "roam"], "unknown method 'roam'"),
        (["--method", "stl"], "needs --task"),
        (["--method", "stl", "--task", "8"], "--task must be in 0..7"),
        (["--method", "mtl", "--sharing", "0.5"], "does not apply to method 'mtl'"),
        (["--method", "mgda", "--alpha", "1"], "--alpha does not apply to method 'mgda'"),
        (["--method", "gradnorm", "--alpha", "-1"], "--alpha must be >= 0"),
        (["--method", "gradnorm", "--task-steps", "joint"], "does not apply"),
        (["--method", "mr", "--strategy", "greedy"], "--strategy must be one of"),
        (["--method", "mr", "--update-ratio", "0"], "--update-ratio must be in (0, 1]"),
        (["--method", "mtl", "--compute", "skip"], "--compute does not apply to method 'mtl'"),
        (["--method", "mr", "--compute", "sparse"], "--compute must be one of dense, skip"),
        (
            ["--method", "tr", "--compute", "skip", "--bn", "running"],
            "--compute skip is not exact with --bn running",
        ),
        (["--method", "mr", "--precision", "fp16"], "--precision must be one of fp32, bf16"),
        (["--method", "mr", "--channels-last", "yes"], "--channels-last must be one of"),
        (
            ["--method", "mr", "--sharing", "0.1", "--compute", "skip", "--channels-last", "on"],
            "--channels-last on is refused on a CPU for ResNet-18",
        ),
        (["--method", "mtl", "--width", "0.125", "--channels-last", "on"], "oneDNN#6035"),
        (["--method", "mtl", "--eval-interval", "0"], "--eval-interval must be >= 1"),
    ],
)
def test_bad_arguments_are_rejected_with_a_clear_message(
    celeba_h5, tmp_path, capsys, arguments, message
):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(celeba_h5), "--out", str(out), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("method", "options", "compute"),
    [
        ("mr", {}, "dense"),  # p = 0.8: ResNet-18 skips too little to gain
        ("tr", {"sharing": 0.5}, "skip"),
        ("mr", {"sharing": 0.7}, "skip"),
        ("mr", {"sharing": 0.5, "bn": "running"}, "dense"),
        ("mr", {"compute": "skip"}, "skip"),
        ("mr", {"sharing": 0.5, "compute": "dense"}, "dense"),
        ("mr", {"sharing": 0.5, "width": 0.125}, "dense"),  # tiny convs: gathers cost more
        ("mr", {"sharing": 0.5, "width": 0.125, "compute": "skip"}, "skip"),
        ("mtl", {}, None),
    ],
)
def test_compute_defaults_to_skipping_where_it_is_exact(
    celeba_h5, tmp_path, method, options, compute
):
    request = TrainConfig(data=celeba_h5, method=method, out=tmp_path, **options)
    assert resolve_request(request)[0].compute == compute


def test_segnet_skips_at_every_sharing_ratio_below_one():
    assert default_compute("segnet", "batch", 0.9, 1.0) == "skip"
    assert default_compute("segnet", "batch", 1.0, 1.0) == "dense"
    assert default_compute("segnet", "running", 0.6, 1.0) == "dense"
    assert default_compute("segnet", "batch", 0.6, 0.25) == "dense"


def test_missing_data_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere.h5"
    with pytest.raises(SystemExit):
        main(["train", "--data", str(missing), "--method", "mtl", "--out", str(tmp_path / "r")])
    assert f"{missing}: prepared data file not found" in capsys.readouterr().err


def test_evaluate_refuses_an_unfinished_run(celeba_h5, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--run", str(tmp_path), "--data", str(celeba_h5), "--out", "m.json"])
    assert "no model.pt" in capsys.readouterr().err


def test_run_starts_over_when_its_data_changed(celeba_h5, tmp_path, capsys):
    write_celeba_fixture(tmp_path / "raw", seed=1, n_train=64, n_val=8, n_test=8, layout="drive")
    changed = tmp_path / "changed.h5"
    prepare_celeba(tmp_path / "raw", changed, progress=False)
    out = run(celeba_h5, tmp_path / "mtl", "mtl", epochs=1)
    run(changed, out, "mtl", epochs=1)
    assert "configuration changed" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    with h5py.File(changed) as file:
        assert config["data_fingerprint"] == file.attrs["fingerprint"]
