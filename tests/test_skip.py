"""Masked-channel skipping is exact: the dense masked computation's outputs and gradients, in
float64, for ResNet-18 and SegNet, per-task and fused passes, at several sharing ratios."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from roaming import masks
from roaming.bench import Shape, synthetic_split, task_set, trainer_config
from roaming.methods.roaming import Roaming
from roaming.models import ConvBlock, blocks, build_model, masked_layers
from roaming.models.skip import first_in_window
from roaming.train import Trainer

HEADS = {"resnet18": [3, 2, 4], "segnet": [1, 1, 3]}
SHAPES = {"resnet18": (4, 3, 78, 64), "segnet": (2, 3, 32, 64)}
WIDTH = 0.125
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


@pytest.fixture(params=["per-task", "grouped"])
def fused(request, monkeypatch):
    """Both ways a fused skipping pass runs: T compact passes (CPU) and grouped convolution
    (GPU; forced here so the CPU checks it)."""
    if request.param == "grouped":
        monkeypatch.setattr(blocks, "fuses_skipping", lambda device: True)
    return request.param


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def pair(arch: str, sharing: float, seed: int = 0, device: str = "cpu", **options):
    """A dense and a skipping model with the same weights and masks drawn at ``sharing``, on
    ``device``."""
    torch.manual_seed(seed)
    dense = build_model(arch, head_sizes=HEADS[arch], slot="mask", width=WIDTH)
    generator = torch.Generator().manual_seed(seed)
    for _, slot, _ in masked_layers(dense):
        tasks, channels = slot.mask.shape
        slot.mask.copy_(masks.initial_mask(tasks, channels, sharing, generator))
        slot.history.copy_(slot.mask)
    skipping = build_model(
        arch, head_sizes=HEADS[arch], slot="mask", width=WIDTH, compute="skip", **options
    )
    skipping.load_state_dict(dense.state_dict())
    return dense.to(device), skipping.to(device)


def images(arch: str, device: str = "cpu") -> torch.Tensor:
    return torch.rand(*SHAPES[arch], generator=torch.Generator().manual_seed(1)).to(device)


def outputs_and_grads(model, x, task):
    """Outputs of one task's pass (or every task's, fused: ``task="all"``) and the gradients of
    every parameter from a loss that reaches every output."""
    model.zero_grad(set_to_none=True)
    outs = model.forward_all(x) if task == "all" else [model(x, task)]
    weights = [torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out) for out in outs]
    sum((out * weight).sum() for out, weight in zip(outs, weights, strict=True)).backward()
    grads = {
        name: torch.zeros_like(p) if p.grad is None else p.grad
        for name, p in model.named_parameters()
    }
    return outs, grads


def assert_same(dense, skipping, x, task):
    """Equal up to float64 rounding, relative to the largest value of the kind: summing in
    another order leaves ~1e-16 of it (a conv bias before batch-statistics BatchNorm has a
    gradient that is zero up to that rounding)."""
    outs_d, grads_d = outputs_and_grads(dense, x, task)
    outs_s, grads_s = outputs_and_grads(skipping, x, task)
    scale = max(float(out.detach().abs().max()) for out in outs_d)
    for a, b in zip(outs_d, outs_s, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12 * scale)
    scale = max(float(grad.abs().max()) for grad in grads_d.values())
    for name, grad in grads_d.items():
        torch.testing.assert_close(grads_s[name], grad, rtol=1e-9, atol=1e-12 * scale, msg=name)
    return grads_s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sharing", [0.25, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("arch", ["resnet18", "segnet"])
def test_skipping_equals_the_dense_pass(float64, arch, sharing, device):
    """On a GPU the fused pass is the grouped convolution (:func:`blocks.fuses_skipping`)."""
    dense, skipping = pair(arch, sharing, device=device)
    x = images(arch, device)
    for task in [0, 2, "all"]:
        assert_same(dense, skipping, x, task)


@pytest.mark.parametrize("sharing", [0.5, 1.0])
@pytest.mark.parametrize("arch", ["resnet18", "segnet"])
def test_grouped_fused_skipping_equals_the_dense_pass(float64, monkeypatch, arch, sharing):
    monkeypatch.setattr(blocks, "fuses_skipping", lambda device: True)
    dense, skipping = pair(arch, sharing)
    assert_same(dense, skipping, images(arch), "all")
    z = skipping.features(images(arch).repeat_interleave(3, 0), "all")
    torch.testing.assert_close(z, dense.features(images(arch).repeat_interleave(3, 0), "all"))


@pytest.mark.parametrize("arch", ["resnet18", "segnet"])
def test_skipped_weights_get_exactly_zero_gradients(float64, arch):
    dense, skipping = pair(arch, 0.5)
    task = 1
    grads = assert_same(dense, skipping, images(arch), task)
    previous = None  # SegNet: each conv reads the previous block's output (ResNet: conv2 only)
    for name, slot, _ in masked_layers(skipping):
        grad = grads[f"{name}.conv.weight"]
        active = slot.mask[task]
        assert bool((grad[~active] == 0).all()), name
        assert bool((grad[active] != 0).any()), name
        reads_previous = arch == "segnet" or name.endswith("conv2")
        if previous is not None and reads_previous and grad.shape[1] == previous.numel():
            assert bool((grad[:, ~previous] == 0).all()), name
        previous = active


@pytest.mark.parametrize("arch", ["resnet18", "segnet"])
def test_a_mask_that_just_roamed_is_used_at_once(float64, fused, arch):
    """Skipping caches each mask's channel lists; an update event must invalidate them."""
    dense, skipping = pair(arch, 0.5)
    x = images(arch)
    assert_same(dense, skipping, x, 0)
    assert_same(dense, skipping, x, "all")
    roaming = {
        model: Roaming(
            masked_layers(model),
            roams=True,
            strategy="random",
            update_ratio=1.0,
            generator=torch.Generator().manual_seed(3),
        )
        for model in (dense, skipping)
    }
    for model, schedule in roaming.items():
        schedule.initialise(0.5)
        assert schedule.update(iteration=1) == len(masked_layers(model))
    for (_, a, _), (_, b, _) in zip(masked_layers(dense), masked_layers(skipping), strict=True):
        assert torch.equal(a.mask, b.mask)
    assert_same(dense, skipping, x, 0)
    assert_same(dense, skipping, x, "all")
    # and a direct swap of one layer's mask (masks.random_swap), as tests and tools may do
    for model in (dense, skipping):
        _, slot, _ = masked_layers(model)[3]
        mask, history = masks.random_swap(slot.mask, slot.history, torch.Generator().manual_seed(4))
        slot.mask.copy_(mask)
        slot.history.copy_(history)
    assert_same(dense, skipping, x, 1)


@pytest.mark.parametrize("arch", ["resnet18", "segnet"])
def test_fused_pass_with_unequal_active_counts(float64, fused, arch):
    """Tasks keeping different numbers of channels: groups padded with inactive channels."""
    dense, skipping = pair(arch, 0.5)
    generator = torch.Generator().manual_seed(5)
    for model in (dense, skipping):
        for _, slot, _ in masked_layers(model):
            chance = torch.tensor([0.3, 0.6, 0.9]).unsqueeze(1)
            slot.mask.copy_(torch.rand(slot.mask.shape, generator=generator) < chance)
    for (_, a, _), (_, b, _) in zip(masked_layers(dense), masked_layers(skipping), strict=True):
        b.mask.copy_(a.mask)
    assert_same(dense, skipping, images(arch), "all")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("arch", ["resnet18", "segnet"])
def test_skipping_in_either_memory_format_and_evaluation_mode(float64, fused, arch, channels_last):
    dense, skipping = pair(arch, 0.8, channels_last=channels_last)
    assert skipping.uses_channels_last(torch.device("cpu")) is channels_last
    dense.eval()
    skipping.eval()
    assert_same(dense, skipping, images(arch), 2)
    assert_same(dense, skipping, images(arch), "all")


@pytest.mark.parametrize(("arch", "skips_in_nhwc"), [("resnet18", False), ("segnet", True)])
def test_memory_format_defaults_where_measured_faster(arch, skips_in_nhwc):
    """On a CPU at the measured widths: NHWC for dense passes, bf16 and SegNet's skipping, NCHW
    for ResNet-18's; NCHW at small widths and on a GPU."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    def nhwc(device, width=1.0, **options):
        model = build_model(arch, head_sizes=HEADS[arch], slot="mask", width=width, **options)
        return model.uses_channels_last(device)

    assert nhwc(cpu) and nhwc(cpu, precision="bf16")
    assert nhwc(cpu, compute="skip") is skips_in_nhwc
    assert nhwc(cpu, compute="skip", precision="bf16") is skips_in_nhwc
    assert not nhwc(cpu, width=0.25) and not nhwc(cuda) and not nhwc(cuda, compute="skip")
    assert nhwc(cpu, width=0.25, channels_last=True)


def test_skipping_refuses_what_it_cannot_do_exactly():
    with pytest.raises(ValueError, match="running BatchNorm statistics"):
        build_model("segnet", head_sizes=[1], slot="mask", compute="skip", bn_running_stats=True)
    with pytest.raises(ValueError, match="needs mask slots"):
        build_model("resnet18", head_sizes=[1], slot="se", compute="skip")
    with pytest.raises(ValueError, match="compute must be one of dense, skip"):
        build_model("resnet18", head_sizes=[1], slot="mask", compute="sparse")
    with pytest.raises(ValueError, match="task index"):
        build_model("resnet18", head_sizes=[1], slot="mask", compute="skip").features(
            images("resnet18"), None
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_max_pool_of_a_zero_map_picks_each_windows_first_element(memory_format, dtype, device):
    """What SegNet's skipping assumes of an inactive encoder channel (±0 after mask and ReLU)."""
    signs = torch.randint(0, 2, (2, 5, 8, 12), generator=torch.Generator().manual_seed(0))
    zeros = torch.where(signs == 1, torch.tensor(-0.0), torch.tensor(0.0)).to(dtype)
    zeros = F.relu(zeros.to(device).contiguous(memory_format=memory_format))
    _, indices = F.max_pool2d(zeros, 2, 2, return_indices=True)
    expected = first_in_window((8, 12), torch.device(device)).expand_as(indices)
    assert torch.equal(indices, expected)


@pytest.mark.parametrize("running", [False, True])
def test_fused_batch_norm_is_bitwise_the_per_task_one(running):
    """One BatchNorm call for the whole fused batch gives each task's rows exactly the
    statistics of their own pass (running statistics: one call per task, in task order)."""
    torch.manual_seed(0)
    tasks, batch = 3, 4
    block = ConvBlock(4, 6, 3, padding=1, num_tasks=tasks, bn_running_stats=running)
    with torch.no_grad():
        block.bn.weight.uniform_(0.5, 2)
        block.bn.bias.uniform_(-1, 1)
    reference = ConvBlock(4, 6, 3, padding=1, num_tasks=tasks, bn_running_stats=running)
    reference.load_state_dict(block.state_dict())
    x = torch.randn(batch * tasks, 6, 5, 7) * 3 + 1
    fused = block._normalise(x, "all")
    rows = x.view(batch, tasks, 6, 5, 7)
    separate = torch.stack(
        [reference._normalise(rows[:, t].contiguous(), t) for t in range(tasks)], 1
    )
    assert torch.equal(fused, separate.view_as(x))
    assert torch.equal(block.state_dict()["bn.weight"], reference.state_dict()["bn.weight"])
    if running:
        assert torch.equal(block.bn.running_mean, reference.bn.running_mean)
        assert torch.equal(block.bn.running_var, reference.bn.running_var)


@pytest.mark.parametrize("compute", ["dense", "skip"])
def test_bf16_autocast_keeps_float32_weights_and_outputs(compute):
    dense, _ = pair("resnet18", 0.5)
    model = build_model(
        "resnet18",
        head_sizes=HEADS["resnet18"],
        slot="mask",
        width=WIDTH,
        compute=compute,
        precision="bf16",
    )
    model.load_state_dict(dense.state_dict())
    x = images("resnet18")
    out = model(x, 0)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.stem.conv.weight.grad.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(out, dense(x, 0), rtol=0.1, atol=0.1)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        build_model("resnet18", head_sizes=[1], precision="fp16")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("dataset", "task_steps"),
    [("celeba", "per_task"), ("celeba", "fused"), ("nyuv2", "joint"), ("nyuv2", "fused")],
)
def test_training_steps_with_skipping_equal_the_dense_ones(float64, dataset, task_steps, device):
    """Whole `Trainer` steps (losses, optimizer, a roaming event in between), dense and
    skipping, from the same seed: the same losses and weights in float64."""
    height, width, batch_size = (78, 64, 8) if dataset == "celeba" else (32, 64, 2)
    shape = Shape(height, width, batch_size, batch_size, ())
    split = synthetic_split(dataset, shape, torch.device(device))
    batch = split.batch(torch.arange(batch_size))
    batch["images"] = batch["images"].double()
    tasks = task_set(dataset, "paper", single=False)
    protocol = {"width": WIDTH, "lr": 5e-3, "batch_size": batch_size}
    losses, weights = {}, {}
    for compute in ("dense", "skip"):
        cfg = trainer_config(
            dataset, "mr", protocol, sharing=0.5, task_steps=task_steps, compute=compute
        )
        trainer = Trainer(cfg, tasks, torch.device(device))
        steps = []
        for iteration in range(1, 4):
            steps.append(torch.stack([loss.detach() for _, loss in trainer.step(batch)]))
            trainer.roaming.update(iteration)
        losses[compute] = torch.stack(steps)
        weights[compute] = [p.detach().clone() for p in trainer.model.parameters()]
    assert trainer.model.compute == "skip"
    torch.testing.assert_close(losses["skip"], losses["dense"], rtol=1e-10, atol=1e-12)
    # Adam moves a weight by about lr whatever its gradient's size, so weights whose gradients
    # are rounding noise around 0 differ by far less than lr (5e-3), not by float64's epsilon.
    for skip, dense in zip(weights["skip"], weights["dense"], strict=True):
        torch.testing.assert_close(skip, dense, rtol=1e-7, atol=1e-7)
