"""``roaming bench``: runs grouped by what decides their cost, shapes and split sizes from the
preset, the estimate's arithmetic, and one real (tiny) run of the verb. No timing is asserted."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from roaming import bench, grid
from roaming.cli import main
from roaming.config import DEFAULT_BENCH_COMPUTES

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return grid.load(PARAMS)


def test_paper_runs_are_grouped_by_cost(config):
    plan = grid.plan({**config, "preset": "paper"})
    celeba = plan.datasets["celeba"]
    groups = {g.variant: g for g in bench.group_runs(celeba, ["dense", "skip"])}
    mask_runs = [r for r in celeba.runs if r.method in ("tr", "mr")]
    dense = groups[bench.Variant("mask", "per_task", None, "dense")]
    assert len(dense.runs) == len(mask_runs)  # dense cost does not depend on p
    skipped = [g for v, g in groups.items() if v.kind == "mask" and v.compute == "skip"]
    assert sorted(v.variant.sharing for v in skipped) == [0.1, 0.3, 0.5, 0.7, 0.8, 0.9]
    assert sum(len(g.runs) for g in skipped) == len(mask_runs)
    stl = groups[bench.Variant("stl", None, None, "dense")]
    assert len(stl.runs) == 8 * 3
    assert sum(len(g.runs) for v, g in groups.items() if v.compute == "dense") == len(celeba.runs)
    only_dense = bench.group_runs(celeba, ["dense"])
    assert all(g.variant.compute == "dense" for g in only_dense)
    # What the pipeline runs: ResNet-18 skips below p = 0.75 only.
    pipeline = [g for g in bench.group_runs(celeba, ["default"]) if g.variant.kind == "mask"]
    assert sorted(g.variant.sharing for g in pipeline if g.variant.compute == "skip") == [
        0.1, 0.3, 0.5, 0.7
    ]  # fmt: skip
    (dense_default,) = [g for g in pipeline if g.variant.compute == "dense"]
    assert {r.sharing for r in dense_default.runs} == {0.8, 0.9}
    assert sum(len(g.runs) for g in pipeline) == len(mask_runs)


def test_by_default_the_dense_sets_time_no_dense_mask_step(config):
    """Unless told, mask runs are estimated as the pipeline runs them: SegNet skips at every
    p < 1 of the paper, so the dense sets time no dense mask step (the bench's 10 minutes)."""
    plan = grid.plan({**config, "preset": "paper"})
    for name in ("cityscapes", "nyuv2"):
        groups = bench.group_runs(plan.datasets[name], DEFAULT_BENCH_COMPUTES)
        masked = [g.variant.compute for g in groups if g.variant.kind == "mask"]
        assert masked and set(masked) == {"skip"}, name


def test_the_pipeline_total_takes_each_runs_own_compute(config):
    celeba = grid.plan({**config, "preset": "paper"}).datasets["celeba"]
    groups = bench.group_runs(celeba, ["dense", "skip"])
    for i, group in enumerate(groups):  # made-up rates, distinct per group
        group.steps_per_second = group.eval_batches_per_second = 1.0 + i
    result = bench.DatasetBench(
        "celeba", bench.shape_of(celeba), 40, bench.Timing(1.0, 1, 1.0, 0.0), groups
    )
    per_run = {g.variant: result.hours(g) / len(g.runs) for g in groups}
    expected = 0.0
    for run in celeba.runs:
        compute = bench.run_compute(run) or "dense"
        sharing = run.sharing if compute == "skip" else None
        kind = "mask" if run.method in ("tr", "mr") else run.method
        steps = run.protocol.get("task_steps") if run.method in ("se", "tr", "mr") else None
        expected += per_run[bench.Variant(kind, steps, sharing, compute)]
    assert result.total("default") == pytest.approx(expected)
    assert result.total("default") != pytest.approx(result.total("skip"))


def test_shapes_and_split_sizes_follow_the_preset(config):
    paper = grid.plan({**config, "preset": "paper"}).datasets
    celeba = bench.shape_of(paper["celeba"])
    assert (celeba.height, celeba.width, celeba.batch_size) == (78, 64, 256)
    assert celeba.train_size == 162770
    assert celeba.eval_sizes == (19867,) * 40 + (19867, 19962)  # val per epoch, then val, test
    nyuv2 = bench.shape_of(paper["nyuv2"])
    assert (nyuv2.height, nyuv2.width, nyuv2.batch_size) == (288, 384, 2)
    assert nyuv2.eval_sizes == (654,) * 101  # test every 5 epochs (100), then test
    demo = bench.shape_of(grid.plan(config).datasets["cityscapes"])
    assert (demo.height, demo.width, demo.train_size) == (32, 64, 48)
    assert demo.eval_sizes == (16,) * 4  # the demo evaluates every epoch (3), then test


def test_hours_are_steps_over_rate_plus_evaluation():
    shape = bench.Shape(32, 64, 8, train_size=100, eval_sizes=(20, 20, 20))
    runs = [object(), object()]
    group = bench.Group(bench.Variant("mtl", None, None, "dense"), runs, 2.0, 4.0)
    reference = bench.Timing(1.0, 1, 1.0, 0.0)
    result = bench.DatasetBench("cityscapes", shape, 2, reference, [group])
    # 2 runs × (13 batches × 2 epochs / 2 steps/s + 3 × 3 batches / 4 batches/s)
    assert result.hours(group) == pytest.approx(2 * (13 + 9 / 4) / 3600)
    assert math.isclose(result.total("dense"), result.hours(group))


@pytest.fixture
def one_thread():
    """Tiny steps on a shared 2-core machine: a second thread only waits for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bench_verb_prints_the_table(config, tmp_path, capsys, one_thread):
    tiny = copy.deepcopy(config)
    tiny["preset"] = "demo"
    celeba = tiny["presets"]["demo"]["datasets"]["celeba"]
    celeba["train"]["batch_size"] = 4
    celeba["grid"] = {
        "seeds": [0, 1],
        "stl": False,
        "mtl": True,
        "tr": {},
        "mr": {"sweep": {"sharing": [0.5, 1.0]}},
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny))
    main(
        [
            "bench", "--params", str(params), "--datasets", "celeba", "--device", "cpu",
            "--min-seconds", "0", "--max-steps", "1", "--compute", "skip", "default",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| celeba")]
    labels = [row.split("|")[2].strip() for row in rows]
    assert labels == [
        "reference-equivalent",
        "mtl",
        "tr/mr per_task skip p=0.5",
        "tr/mr per_task dense any p",  # what the pipeline runs at this tiny width
        "tr/mr per_task skip p=1",
        "**total, mask runs skip**",
        "**total, mask runs as the pipeline runs them**",
    ]
    runs = {label: row.split("|")[3].strip() for label, row in zip(labels, rows, strict=True)}
    assert runs["mtl"] == "2" and runs["tr/mr per_task dense any p"] == "4"
    for row in rows[1:5]:
        assert float(row.split("|")[6]) > 0  # a ratio against the reference
    assert "malloc tuned: True" in out and "bench wall time" in out


def test_train_step_script_times_the_steps_it_is_asked_for():
    """``benchmarks/train_step.py`` times ``--steps`` real steps per variant and compares them."""
    script = Path(__file__).parents[1] / "benchmarks" / "train_step.py"
    result = subprocess.run(
        [
            sys.executable, str(script), "--width", "0.125", "--batch-size", "4",
            "--steps", "3", "--variants", "mtl", "mr per_task",
        ],
        capture_output=True, text=True, check=True, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert "1 warm-up step then 3 steps" in lines[0]
    timed = [line for line in lines if "steps/s" in line]
    assert [line.split()[0] for line in timed] == ["mtl", "mr"]
    assert all("(3 timed)" in line for line in timed)
    assert any(line.startswith("mr per_task") and "x an MTL step" in line for line in lines)


def test_a_cpu_warm_up_is_one_pass_and_an_adam_step(one_thread):
    """GradNorm's warm-up runs every head once and steps Adam, without its gradient norms
    (their kernels are the pass's): its weighting has seen no batch, Adam has its state."""
    shape = bench.Shape(78, 64, 4, 4, ())
    split = bench.synthetic_split("celeba", shape, torch.device("cpu"))
    batch = split.batch(torch.arange(4))
    protocol = {"width": 0.125, "batch_size": 4}
    cfg = bench.trainer_config("celeba", "gradnorm", protocol)
    trainer = bench.Trainer(cfg, bench.task_set("celeba", "paper", False), torch.device("cpu"))
    bench.warm_up(trainer, batch)
    assert trainer.weighting.initial_losses is None
    assert all(trainer.optimizer.state[p]["step"] == 1 for p in trainer.model.parameters())
    trainer.step(batch)
    assert trainer.weighting.initial_losses is not None
