"""Does bf16 autocast change the reported metrics beyond seed noise? Demo runs, both ways.

For each dataset, a synthetic release is generated and prepared as the demo preset does, then
the same runs (the demo preset's training protocol from params.yaml, several seeds) are trained
with fp32 and with bf16 autocast (float32 master weights), through the real
``roaming.train.Trainer``, and evaluated on the test split. Printed per dataset, method and
precision: the headline metric's mean and standard deviation over seeds, and the bf16 − fp32
difference of the means in units of the fp32 seed standard deviation.

    python benchmarks/precision.py                       # celeba and cityscapes, mr, 3 seeds
    python benchmarks/precision.py --datasets nyuv2 --methods mtl mr --seeds 0 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from roaming import allocator, grid
from roaming.data.celeba import prepare_celeba
from roaming.data.celeba_fixtures import write_celeba_fixture
from roaming.data.dense import prepare_dense, write_dense_fixture
from roaming.data.splits import load_split
from roaming.datasets import get_dataset
from roaming.predict import predict
from roaming.train import TrainConfig, Trainer, resolve_request

HEADLINE = {"celeba": "fscore", "cityscapes": "miou", "nyuv2": "miou"}


def prepared(dataset: grid.Dataset, root: Path) -> Path:
    """The demo's synthetic release of ``dataset``, prepared into ``root``."""
    fixtures = dict(dataset.fixtures or {})
    out = root / f"{dataset.name}.h5"
    if dataset.name == "celeba":
        write_celeba_fixture(root / "raw", **fixtures, layout="drive")
        prepare_celeba(root / "raw", out, size=dataset.size or 64, progress=False)
    else:
        fixtures.pop("format", None)
        write_dense_fixture(root / "raw", dataset=dataset.name, **fixtures)
        prepare_dense(root / "raw", out, dataset=dataset.name, progress=False)
    return out


def train_and_test(data: Path, method: str, protocol: dict, seed: int, precision: str) -> float:
    """Train one run in memory with ``precision`` and return its test headline metric."""
    options = {k: v for k, v in protocol.items() if k in TrainConfig.__dataclass_fields__}
    if method not in ("se", "tr", "mr"):
        options.pop("task_steps", None)
    request = TrainConfig(
        data=data, method=method, out=data.parent, seed=seed, precision=precision, **options
    )
    cfg, attrs = resolve_request(request)
    spec = get_dataset(cfg.dataset)
    tasks = spec.tasks(attrs, cfg.task, cfg.task_set)
    device = torch.device("cpu")
    trainer = Trainer(cfg, tasks, device)
    train = load_split(data, spec.protocol.train_split, tasks.fields)
    test = load_split(data, "test", tasks.fields)
    for _ in range(cfg.epochs):  # the training loop's epochs, without the run directory
        trainer.train_epoch(train, progress=False)
        trainer.epoch += 1
    return predict(trainer.model, tasks, test, cfg.batch_size)[0][HEADLINE[cfg.dataset]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--datasets", nargs="+", default=["celeba", "cityscapes"])
    parser.add_argument("--methods", nargs="+", default=["mr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    allocator.tune()
    plan = grid.plan({**grid.load(args.params), "preset": "demo"})
    print(f"demo preset of {args.params}, synthetic data, CPU, seeds {args.seeds}")
    for name in args.datasets:
        dataset = plan.datasets[name]
        with tempfile.TemporaryDirectory() as tmp:
            data = prepared(dataset, Path(tmp))
            for method in args.methods:
                scores = {
                    precision: [
                        train_and_test(data, method, dict(dataset.config["train"]), s, precision)
                        for s in args.seeds
                    ]
                    for precision in ("fp32", "bf16")
                }
                fp32, bf16 = scores["fp32"], scores["bf16"]
                noise = statistics.stdev(fp32) if len(fp32) > 1 else float("nan")
                shift = (statistics.mean(bf16) - statistics.mean(fp32)) / noise
                for precision, values in scores.items():
                    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
                    print(
                        f"{name} {method} {precision}: {HEADLINE[name]} "
                        f"{statistics.mean(values):.4f} ± {spread:.4f} "
                        f"({', '.join(f'{v:.4f}' for v in values)})"
                    )
                print(f"{name} {method}: bf16 − fp32 = {shift:+.2f} fp32 seed std", flush=True)


if __name__ == "__main__":
    main()
