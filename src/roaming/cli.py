"""The ``roaming`` command line: one verb per pipeline stage.

Each verb parses its arguments and calls one library function; errors that a user can act on
(:class:`roaming.errors.RoamingError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from roaming import __version__, allocator
from roaming.config import BENCH_COMPUTES, CHANNELS_LAST, DEFAULT_BENCH_COMPUTES, PRECISIONS
from roaming.errors import ConfigError, RoamingError, StoppedError, os_cause
from roaming.methods import METHODS

if TYPE_CHECKING:
    import torch

DATASETS = ("celeba", "cityscapes", "nyuv2")


def _fixtures(args: argparse.Namespace) -> None:
    if args.dataset == "celeba":
        from roaming.data.celeba_fixtures import write_celeba_fixture

        if args.format not in (None, "raw"):
            raise ConfigError("CelebA fixtures exist in the official ('raw') format only")
        write_celeba_fixture(
            args.out,
            seed=args.seed,
            n_train=_default(args.n_train, 600),
            n_val=_default(args.n_val, 150),
            n_test=_default(args.n_test, 150),
            layout=args.layout,
        )
        return
    from roaming.data.dense import write_dense_fixture

    if args.format == "raw" and args.dataset == "cityscapes":
        from roaming.data.cityscapes_raw import write_cityscapes_raw_fixture

        if args.n_train is not None or args.n_val is not None or args.n_test is not None:
            raise ConfigError(
                "raw CityScapes fixtures have fixed cities (train aachen, bochum; val "
                "frankfurt; test berlin) with 2 frames each; --n-* do not apply"
            )
        write_cityscapes_raw_fixture(
            args.out,
            seed=args.seed,
            height=_default(args.height, 64),
            width=_default(args.width, 128),
        )
        return
    if args.n_val is not None:
        raise ConfigError(f"{args.dataset} has no validation split (MTAN's val is the test split)")
    if args.format == "raw":
        from roaming.data.nyuv2_raw import write_nyuv2_raw_fixture

        write_nyuv2_raw_fixture(
            args.out,
            seed=args.seed,
            n_train=_default(args.n_train, 8),
            n_test=_default(args.n_test, 4),
            height=_default(args.height, 120),
            width=_default(args.width, 160),
        )
        return
    write_dense_fixture(
        args.out,
        dataset=args.dataset,
        seed=args.seed,
        n_train=_default(args.n_train, 48),
        n_test=_default(args.n_test, 16),
        height=_default(args.height, 32),
        width=_default(args.width, 64),
    )


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _prepare(args: argparse.Namespace) -> None:
    progress = not args.quiet
    if args.dataset == "celeba":
        from roaming.data.celeba import prepare_celeba

        if args.size is not None and len(args.size) != 1:
            raise ConfigError("CelebA takes one --size: the shorter image side in pixels")
        if args.depth is not None:
            raise ConfigError("--depth applies to cityscapes and nyuv2 only")
        size = 64 if args.size is None else args.size[0]
        prepare_celeba(args.raw, args.out, size=size, progress=progress)
        return
    if args.size is not None and len(args.size) != 2:
        raise ConfigError(f"{args.dataset} takes --size H W (two numbers)")
    size = None if args.size is None else (args.size[0], args.size[1])
    detect, prepare_raw = _raw_reader(args.dataset)
    if detect(args.raw):
        options = {key: value for key, value in (("size", size), ("depth", args.depth)) if value}
        prepare_raw(args.raw, args.out, progress=progress, **options)
        return
    from roaming.data.dense import prepare_dense

    if args.depth is not None:
        raise ConfigError(
            "--depth applies to raw releases only; MTAN's files already fix the depth "
            f"({args.dataset}: {'inverse depth' if args.dataset == 'cityscapes' else 'metres'})"
        )
    prepare_dense(args.raw, args.out, dataset=args.dataset, size=size, progress=progress)


def _raw_reader(dataset: str) -> tuple[Callable[[Path], bool], Callable[..., None]]:
    """How to recognise and convert the raw release of a dense dataset."""
    if dataset == "cityscapes":
        from roaming.data.cityscapes_raw import is_cityscapes_raw, prepare_cityscapes_raw

        return is_cityscapes_raw, prepare_cityscapes_raw
    from roaming.data.nyuv2_raw import is_nyuv2_raw, prepare_nyuv2_raw

    return is_nyuv2_raw, prepare_nyuv2_raw


def _train(args: argparse.Namespace) -> None:
    from roaming.config import TrainConfig
    from roaming.train import train

    options = {
        key: getattr(args, key)
        for key in (
            "data",
            "method",
            "out",
            "sharing",
            "update_interval",
            "strategy",
            "update_ratio",
            "task_steps",
            "epochs",
            "eval_interval",
            "batch_size",
            "lr",
            "width",
            "seed",
            "task",
            "alpha",
            "task_set",
            "bn",
            "compute",
            "precision",
            "channels_last",
            "device",
            "threads",
            "data_source",
        )
    }
    train(TrainConfig(**options), progress=not args.quiet, restart=args.restart)


def _evaluate(args: argparse.Namespace) -> None:
    from roaming.evaluate import evaluate

    metrics = evaluate(
        args.run, args.data, args.split, args.out, predictions=args.predictions, device=args.device
    )
    headline = {k: v for k, v in metrics.items() if "/" not in k}
    print(" ".join(f"{key} {value:.4f}" for key, value in headline.items()))


def _report(args: argparse.Namespace) -> None:
    import json

    from roaming.report import write_report

    defaults = None
    if args.defaults is not None:
        try:
            defaults = json.loads(args.defaults)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--defaults is not valid JSON: {error.msg}") from None
        if not isinstance(defaults, dict) or not {"tr", "mr"} <= set(defaults):
            raise ConfigError('--defaults must be a JSON object with "tr" and "mr" entries')
    files = write_report(
        args.runs,
        args.out,
        metric=args.metric,
        split=args.split,
        preset=args.preset,
        data_source=args.data_source,
        defaults=defaults,
    )
    for path in files.values():
        print(path)


def _index(args: argparse.Namespace) -> None:
    from roaming.report import write_index

    print(write_index(args.reports, args.out, preset=args.preset, summary=args.summary))


def _bench(args: argparse.Namespace) -> None:
    import os

    import torch

    from roaming.bench import Budget, run_bench
    from roaming.train import pick_device

    device = pick_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options = {"precision": args.precision, "channels_last": args.channels_last}
    budget = Budget(args.min_seconds, args.max_steps)
    start = time.perf_counter()
    print(
        f"roaming bench: {args.params}, preset {args.preset or '(active)'}, {device}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, synthetic batches, "
        f"{args.precision}, channels_last {args.channels_last}, "
        f"malloc tuned: {allocator.tune()}{_gpu_note(device)}",
        flush=True,
    )
    print(
        run_bench(
            args.params,
            args.preset,
            device,
            datasets=args.datasets,
            computes=args.compute,
            budget=budget,
            options=options,
        )
    )
    print(f"bench wall time {time.perf_counter() - start:.0f} s")


def _gpu_note(device: torch.device) -> str:
    """What a GPU's "fp32" means and what its CPU seconds count, for the bench's header."""
    if device.type != "cuda":
        return ""
    import torch

    tf32 = "on (PyTorch's default)" if torch.backends.cudnn.allow_tf32 else "off"
    return (
        f", {torch.cuda.get_device_name(device)}, TF32 convolutions {tf32}, "
        "CPU s/step: the host thread's time, its waits for the device included"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(
        prog="roaming",
        description="Maximum Roaming multi-task learning: data, training, evaluation, reports.",
    )
    parser.add_argument("--version", action="version", version=f"roaming {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    fixtures = verbs.add_parser(
        "fixtures",
        help="write a small synthetic dataset in the official on-disk format",
        description="Write a synthetic dataset in exactly the format of the official release, "
        "with labels drawn into the images so that a small network can learn them.",
    )
    fixtures.add_argument("dataset", choices=DATASETS)
    fixtures.add_argument("--out", type=Path, required=True, help="folder to write into")
    fixtures.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fixtures.add_argument(
        "--format",
        choices=["raw", "mtan"],
        help="on-disk format: raw (the official release: CelebA's, CityScapes' leftImg8bit/ "
        "gtFine/ disparity/ camera/, NYUv2's labelled .mat with its split and mapping files; "
        "the default for celeba) or mtan (MTAN's preprocessed npy folders; the default for "
        "cityscapes and nyuv2)",
    )
    fixtures.add_argument(
        "--n-train", type=int, help="training samples (celeba 600, mtan 48, raw nyuv2 8)"
    )
    fixtures.add_argument("--n-val", type=int, help="validation images (celeba only; 150)")
    fixtures.add_argument(
        "--n-test", type=int, help="test samples (celeba 150, mtan 16, raw nyuv2 4)"
    )
    fixtures.add_argument(
        "--layout",
        choices=["drive", "torchvision"],
        default="drive",
        help="CelebA folder layout: 'drive' (Img/, Anno/, Eval/) or 'torchvision' (celeba/)",
    )
    fixtures.add_argument(
        "--height",
        type=int,
        help="dense image height: mtan a multiple of 32 (32), raw cityscapes a multiple of 32 "
        "(64), raw nyuv2 at least 32 (120)",
    )
    fixtures.add_argument(
        "--width",
        type=int,
        help="dense image width: mtan a multiple of 32 (64), raw cityscapes a multiple of 32 "
        "(128), raw nyuv2 at least 32 (160)",
    )
    fixtures.set_defaults(handler=_fixtures)

    prepare = verbs.add_parser(
        "prepare",
        help="validate a raw dataset and convert it to one HDF5 file",
        description="Validate a raw dataset and convert it to one HDF5 file, written atomically.",
    )
    prepare.add_argument("dataset", choices=DATASETS)
    prepare.add_argument("--raw", type=Path, required=True, help="folder of the raw release")
    prepare.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    prepare.add_argument(
        "--size",
        type=int,
        nargs="+",
        help="celeba: the shorter image side in pixels (default 64, the reference's); "
        "cityscapes/nyuv2: H W (default: MTAN's files keep their size, 128 256 and 288 384 for "
        "the downloads; raw releases become 128 256 and 288 384); labels, depth and normals are "
        "resized with nearest neighbour",
    )
    prepare.add_argument(
        "--depth",
        help="depth of a raw release: cityscapes mtan_inverse (disparity/65535, MTAN's; the "
        "default) or metric_m (metres from disparity and camera); nyuv2 inpainted (the .mat's "
        "depths; the default) or raw (rawDepths, 0 = missing)",
    )
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(handler=_prepare)

    train = verbs.add_parser(
        "train",
        help="train one run (resumes an interrupted one)",
        description="Train one run into RUNDIR. Options left out take the dataset's reference "
        "protocol (docs/protocol.md §5). Re-running the same command resumes an interrupted "
        "run and does nothing for a finished one; a changed configuration or training code "
        "starts over.",
        epilog="methods: "
        + "; ".join(f"{name}: {method.summary}" for name, method in METHODS.items()),
    )
    train.add_argument("--data", type=Path, required=True, help="prepared HDF5 file")
    train.add_argument(
        "--method", required=True, metavar="METHOD", help=f"one of {', '.join(METHODS)}"
    )
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--sharing", type=float, help="sharing ratio p in (0, 1] (tr, mr)")
    train.add_argument(
        "--update-interval",
        type=float,
        help="Δ between mask updates (mr): a fraction of an epoch for CelebA (default 0.1), "
        "whole epochs for CityScapes/NYUv2 (default 1)",
    )
    train.add_argument("--strategy", help="mask update strategy (mr): random or least_align")
    train.add_argument(
        "--update-ratio", type=float, help="fraction of the roaming cycle to perform (mr; 1.0)"
    )
    train.add_argument(
        "--task-steps",
        help="per_task: an optimizer step after each task's pass (CelebA reference); "
        "joint: one step per batch on the summed gradients; fused: joint, with all tasks' "
        "passes fused into one (faster, T times the activation memory) (se, tr, mr)",
    )
    train.add_argument("--epochs", type=int, help="training epochs (CelebA 40, dense 500)")
    train.add_argument(
        "--eval-interval",
        type=int,
        help="evaluate every N epochs and after the last (CelebA 1, dense 5, as the reference)",
    )
    train.add_argument(
        "--batch-size", type=int, help="batch size (CelebA 256, CityScapes 8, NYUv2 2)"
    )
    train.add_argument("--lr", type=float, help="Adam learning rate (1e-4)")
    train.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1.0)")
    train.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    train.add_argument(
        "--task",
        help="task to train, by index or name (stl only), e.g. 2, hair, depth, seg_car",
    )
    train.add_argument("--alpha", type=float, help="GradNorm's asymmetry α (gradnorm only; 0.5)")
    train.add_argument(
        "--task-set",
        default="paper",
        help="paper (CityScapes/NYUv2: one binary task per class + depth [+ normals]) or "
        "standard (one softmax segmentation task + depth [+ normals]); CelebA: paper only",
    )
    train.add_argument(
        "--bn",
        default="batch",
        help="BatchNorm statistics: batch (reference: batch statistics at train and eval) "
        "or running",
    )
    train.add_argument(
        "--compute",
        help="dense: every channel, masked ones multiplied by 0 (the reference); skip: only the "
        "channels each task's masks keep, the same values, faster at low p (tr, mr; default "
        "skip with --bn batch, --width >= 0.5 and p < 0.75 for ResNet-18 (CelebA), p < 1 for "
        "SegNet)",
    )
    train.add_argument(
        "--precision",
        default="fp32",
        help="fp32, or bf16: autocast passes with float32 weights and losses (fp32)",
    )
    train.add_argument(
        "--channels-last",
        default="auto",
        help="activations in the NHWC memory format: on, off, or auto (where measured "
        "faster: on a CPU from width 0.5 but ResNet-18's skipping)",
    )
    train.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (auto)")
    train.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: every core this process may use); recorded, since the "
        "result on a CPU is bitwise reproducible only at the same thread count",
    )
    train.add_argument(
        "--data-source",
        help="synthetic or real: refuse a prepared file holding the other kind (the pipeline "
        "passes its preset's)",
    )
    train.add_argument(
        "--restart", action="store_true", help="ignore an existing checkpoint and start over"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    evaluate = verbs.add_parser(
        "evaluate",
        help="evaluate a finished run on one split",
        description="Evaluate the final model of RUNDIR on one split; write flat metrics JSON.",
    )
    evaluate.add_argument("--run", type=Path, required=True, help="run directory")
    evaluate.add_argument("--data", type=Path, required=True, help="prepared HDF5 file")
    evaluate.add_argument("--split", default="test", help="split to evaluate (test)")
    evaluate.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    evaluate.add_argument(
        "--predictions", type=Path, help="also write per-sample predictions to this HDF5 file"
    )
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (auto)")
    evaluate.set_defaults(handler=_evaluate)

    report = verbs.add_parser(
        "report",
        help="one dataset's results: tables, Δm, Figure 1, curves, masks, claims",
        description="Summarise the evaluated runs of one dataset into OUT (docs/protocol.md "
        "§8): table.md and table.csv (one row per configuration, mean ± std over seeds, "
        "Δm against STL), figure1_sharing/interval/progress/strategy.png (each panel whose runs "
        "exist), curves.png, masks.png (with an MR run), claims.md, report.html (all of it, "
        "self-contained), summary.json (headline numbers for dvc metrics), curves/ (one CSV "
        "per method for dvc plots) and metrics/ (one JSON of headline metrics per run).",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUNDIR", help="run directories")
    report.add_argument("--out", type=Path, required=True, help="folder to write into")
    report.add_argument("--split", default="test", help="split whose metrics to read (test)")
    report.add_argument(
        "--metric", help="headline metric of the figures and claims (celeba fscore, dense miou)"
    )
    report.add_argument("--preset", help="the params.yaml preset the runs belong to (provenance)")
    report.add_argument(
        "--data-source",
        choices=["synthetic", "real"],
        help="what runs whose config.json does not record data_source trained on "
        "(default: unknown)",
    )
    report.add_argument(
        "--defaults",
        metavar="JSON",
        help='the grid\'s TR and MR defaults, e.g. \'{"tr": {"sharing": 0.9}, "mr": {"sharing": '
        '0.8, "update_interval": 0.1, "strategy": "random", "update_ratio": 1}}\': the '
        "configurations the claims and summary.json call TR and MR (default: the dataset's "
        "reference protocol)",
    )
    report.set_defaults(handler=_report)

    index = verbs.add_parser(
        "index",
        help="one self-contained page of several dataset reports",
        description="Join the report.html of each REPORTDIR (written by roaming report) into "
        "one self-contained page, datasets in the paper's order: CelebA, CityScapes, NYUv2.",
    )
    index.add_argument(
        "reports", nargs="+", type=Path, metavar="REPORTDIR", help="dataset report folders"
    )
    index.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    index.add_argument("--preset", help="the preset the reports belong to (the page's title)")
    index.add_argument(
        "--summary",
        type=Path,
        help="also join the reports' summary.json into this file, keyed by dataset",
    )
    index.set_defaults(handler=_index)

    bench = verbs.add_parser(
        "bench",
        help="measure what a preset's grid costs on a device",
        description="Time real training steps and an evaluation batch of every distinct "
        "(dataset, method kind, task steps, sharing ratio, compute) of a preset's grid at its "
        "shapes, on synthetic batches, and a reference-equivalent step (T dense masked passes, "
        "the authors' algorithm); print steps/s, ratios against the reference and the "
        "estimated device-hours per dataset and in total.",
    )
    bench.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (params.yaml)"
    )
    bench.add_argument("--preset", help="preset to measure (default: the file's active preset)")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (auto)")
    bench.add_argument("--datasets", nargs="+", help="only these datasets of the preset")
    bench.add_argument(
        "--compute",
        nargs="+",
        choices=BENCH_COMPUTES,
        default=list(DEFAULT_BENCH_COMPUTES),
        help="estimate mask runs (tr, mr) with these compute modes; default: the mode each run "
        "trains with (default; add dense for every mask run dense)",
    )
    bench.add_argument("--precision", choices=PRECISIONS, default="fp32", help="training precision")
    bench.add_argument(
        "--channels-last",
        choices=CHANNELS_LAST,
        default="auto",
        help="channels_last activations: on, off, or auto (where measured faster: on a CPU "
        "from width 0.5 but ResNet-18's skipping)",
    )
    bench.add_argument(
        "--min-seconds",
        type=float,
        default=0.5,
        help="time steps until this long has passed (0.5; at least one step)",
    )
    bench.add_argument("--max-steps", type=int, default=5, help="timed steps at most (5)")
    bench.add_argument(
        "--threads",
        type=int,
        help="PyTorch CPU threads (default: PyTorch's, one per core); with 1, CPU seconds per "
        "step stay accurate on a machine other jobs share",
    )
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``roaming`` console script."""
    allocator.tune()  # before any large allocation (see roaming.allocator)
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except StoppedError as error:  # not a failure: a checkpoint was written, rerun resumes
        print(f"roaming {args.verb}: {error}", file=sys.stderr)
        raise SystemExit(error.status) from None
    except RoamingError as error:
        _fail(args.verb, str(error))
    except OSError as error:  # the file system, outside the places that name their file
        where = f"{error.filename}: " if error.filename else ""
        _fail(args.verb, f"{where}{os_cause(error) or error}")
    except KeyboardInterrupt:
        _fail(args.verb, "interrupted", status=130)


def _fail(verb: str, message: str, status: int = 2) -> None:
    """One line on stderr, then exit: what a user acts on, without a traceback."""
    print(f"roaming {verb}: error: {message}", file=sys.stderr)
    raise SystemExit(status) from None
