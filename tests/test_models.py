"""Tests of the multi-task ResNet-18 and its channel slots (tiny widths, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from roaming.models import (
    ConvBlock,
    MaskSlot,
    MultiTaskModel,
    NoSlot,
    ResNet18,
    SESlot,
    build_model,
    make_slot,
    masked_layers,
)

HEAD_SIZES = (9, 5, 2)
WIDTH = 0.125  # channel widths 8-16-32-64
WIDTHS = {"stem": 8, "layer1": 8, "layer2": 16, "layer3": 32, "layer4": 64}
EXPECTED_MASKED = [
    "stem",
    *(
        f"layer{level}.{block}.{conv}"
        for level in range(1, 5)
        for block in range(2)
        for conv in ("conv1", "conv2", *(("downsample",) if level > 1 and block == 0 else ()))
    ),
]


def tiny(slot: str = "none", bn_running_stats: bool = False, seed: int = 0) -> ResNet18:
    torch.manual_seed(seed)
    return ResNet18(HEAD_SIZES, slot=slot, width=WIDTH, bn_running_stats=bn_running_stats)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 3, 78, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("slot", ["none", "mask", "se"])
def test_output_shape_per_head(slot: str, images: torch.Tensor) -> None:
    model = build_model("resnet18", head_sizes=HEAD_SIZES, slot=slot, width=WIDTH)
    assert isinstance(model, MultiTaskModel)
    assert model.num_tasks == len(HEAD_SIZES)
    assert model.task_specific == (slot != "none")
    for task, size in enumerate(HEAD_SIZES):
        assert model(images, task).shape == (4, size)
        assert model.features(images, task).shape == (4, 64)


def test_masked_layers_names_and_channels() -> None:
    layers = masked_layers(tiny("mask"))
    assert [name for name, _, _ in layers] == EXPECTED_MASKED
    assert len(layers) == 20
    for name, slot, conv in layers:
        channels = WIDTHS[name.split(".")[0]]
        assert slot.mask.shape == slot.history.shape == (len(HEAD_SIZES), channels)
        assert slot.mask.dtype == slot.history.dtype == torch.bool
        assert bool(slot.mask.all()) and bool(slot.history.all())
        assert conv.out_channels == channels
    assert masked_layers(tiny("none")) == masked_layers(tiny("se")) == []


def test_full_width_has_reference_channels_and_init() -> None:
    torch.manual_seed(0)
    layers = masked_layers(ResNet18([1, 1], slot="mask"))
    expected = [64] * 5 + [128] * 5 + [256] * 5 + [512] * 5
    assert [slot.mask.shape[1] for _, slot, _ in layers] == expected
    conv = layers[-1][2]  # Kaiming-normal, fan_out: std = sqrt(2 / (512 * 3 * 3))
    assert conv.weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)


def test_downsample_has_no_batch_norm_and_others_do() -> None:
    model = tiny("mask")
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, ConvBlock)}
    assert len(blocks) == 20
    for name, block in blocks.items():
        if name.endswith("downsample"):
            assert block.bn is None
            assert block.conv.kernel_size == (1, 1) and block.conv.stride == (2, 2)
        else:
            assert isinstance(block.bn, nn.BatchNorm2d)
        assert block.conv.bias is None
    assert model.last_shared_conv is model.layer4[1].conv2.conv


@pytest.mark.parametrize("layer", ["layer2.0.conv1", "layer3.0.downsample"])
def test_masked_channel_is_zero_and_gets_no_gradient(layer: str, images: torch.Tensor) -> None:
    model = tiny("mask")
    name_to = {name: (slot, conv) for name, slot, conv in masked_layers(model)}
    slot, conv = name_to[layer]
    channel = 3
    slot.mask[0, channel] = False
    outputs = {}
    slot.register_forward_hook(lambda _m, _i, out: outputs.__setitem__("out", out))

    def filter_grads(task: int) -> torch.Tensor:
        model.zero_grad()
        model(images, task).pow(2).sum().backward()
        return conv.weight.grad.flatten(1).abs().sum(1)

    grads = filter_grads(0)
    assert bool((outputs["out"][:, channel] == 0).all())
    assert grads[channel] == 0
    assert bool((grads[torch.arange(grads.numel()) != channel] > 0).all())
    assert filter_grads(1)[channel] > 0  # the other task still trains that filter
    assert bool((outputs["out"][:, channel] != 0).any())


def test_different_masks_per_task_give_different_features(images: torch.Tensor) -> None:
    model = tiny("mask")
    with torch.no_grad():
        same = [model.features(images, task) for task in range(model.num_tasks)]
        for _, slot, _ in masked_layers(model):
            slot.mask[1] = torch.rand(slot.mask.shape[1]) < 0.5
        different = [model.features(images, task) for task in range(model.num_tasks)]
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=0)
    torch.testing.assert_close(different[0], different[2], rtol=0, atol=0)
    assert not torch.equal(different[0], different[1])


def test_all_ones_masks_equal_plain_sharing(images: torch.Tensor) -> None:
    plain, masked = tiny("none"), tiny("mask")
    missing, unexpected = masked.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(key.endswith(("mask", "history")) for key in missing)
    with torch.no_grad():
        torch.testing.assert_close(masked(images, 1), plain(images, 1))


def test_task_none_equals_every_task_without_slots(images: torch.Tensor) -> None:
    model = tiny("none")
    with torch.no_grad():
        shared = model.features(images, None)
        for task in range(model.num_tasks):
            torch.testing.assert_close(model.features(images, task), shared, rtol=0, atol=0)


@pytest.mark.parametrize("slot", ["mask", "se"])
def test_task_specific_slots_need_a_task(slot: str, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="task index"):
        tiny(slot).features(images, None)


def test_se_slot_has_per_task_parameters(images: torch.Tensor) -> None:
    model = tiny("se")
    slots = [m for m in model.modules() if isinstance(m, SESlot)]
    assert len(slots) == 20
    first = slots[0]
    assert len(first.excitations) == len(HEAD_SIZES)
    assert first.excitations[0][0].weight is not first.excitations[1][0].weight
    assert first.excitations[0][0].weight.shape == (1, 8)  # max(1, 8 // 16) hidden units
    with torch.no_grad():
        before = [model.features(images, task) for task in range(2)]
        for slot in slots:
            slot.excitations[1][-2].bias.add_(1.0)
        after = [model.features(images, task) for task in range(2)]
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])


def test_batch_statistics_bn_depends_on_eval_batch(images: torch.Tensor) -> None:
    model = tiny("none", bn_running_stats=False).eval()
    assert all(m.running_mean is None for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        assert not torch.allclose(model(images, 0)[:2], model(images[:2], 0))


def test_running_stats_bn_uses_running_averages_at_eval(images: torch.Tensor) -> None:
    model = tiny("none", bn_running_stats=True)
    with torch.no_grad():
        model(images, 0)  # one training step of running statistics
        model.eval()
        torch.testing.assert_close(model(images, 0)[:2], model(images[:2], 0))
    bn = model.stem.bn
    assert bn.num_batches_tracked == 1 and not torch.equal(bn.running_mean, torch.zeros(8))


def test_state_dict_round_trip_keeps_masks(images: torch.Tensor) -> None:
    model = tiny("mask", seed=0)
    for _, slot, _ in masked_layers(model):
        slot.mask.copy_(torch.rand(slot.mask.shape) < 0.5)
        slot.history.copy_(slot.mask | (torch.rand(slot.mask.shape) < 0.5))
    state = model.state_dict()
    assert "stem.slot.mask" in state and "layer4.0.downsample.slot.history" in state
    restored = tiny("mask", seed=1)
    restored.load_state_dict(state)
    for (_, a, _), (_, b, _) in zip(masked_layers(model), masked_layers(restored), strict=True):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.history, b.history)
    with torch.no_grad():
        torch.testing.assert_close(restored(images, 2), model(images, 2), rtol=0, atol=0)


def test_make_slot_kinds() -> None:
    assert isinstance(make_slot("none", 2, 4), NoSlot)
    assert isinstance(make_slot("mask", 2, 4), MaskSlot)
    assert isinstance(make_slot("se", 2, 4), SESlot)
    with pytest.raises(ValueError, match="'masks'"):
        make_slot("masks", 2, 4)


def test_unknown_model_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'vgg'"):
        build_model("vgg", head_sizes=[1])
    with pytest.raises(ValueError, match="head_sizes"):
        ResNet18([])
    with pytest.raises(ValueError, match="width"):
        ResNet18([1], width=0)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("running", [False, True])
@pytest.mark.parametrize("slot", ["mask", "se"])
@pytest.mark.parametrize(
    ("arch", "shape"), [("resnet18", (3, 3, 78, 64)), ("segnet", (2, 3, 32, 64))]
)
def test_fused_pass_equals_one_pass_per_task(arch, shape, slot, running, mode) -> None:
    """forward_all: the same outputs and gradients as T separate passes, and the same running
    BatchNorm statistics (each task slice normalised and tracked on its own), in training and
    in evaluation mode."""
    torch.manual_seed(0)
    model = build_model(
        arch, head_sizes=HEAD_SIZES, slot=slot, width=WIDTH, bn_running_stats=running
    )
    for _, mask_slot, _ in masked_layers(model):
        mask_slot.mask.copy_(torch.rand(mask_slot.mask.shape) < 0.6)
    fused = build_model(
        arch, head_sizes=HEAD_SIZES, slot=slot, width=WIDTH, bn_running_stats=running
    )
    fused.load_state_dict(model.state_dict())
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    if running and mode == "eval":  # running statistics worth using
        for net in (model, fused):
            net(x, 0)
    model.train(mode == "train")
    fused.train(mode == "train")
    separate = [model(x, t) for t in range(len(HEAD_SIZES))]
    together = fused.forward_all(x)
    for a, b in zip(separate, together, strict=True):
        torch.testing.assert_close(a, b)
    sum(out.square().mean() for out in separate).backward()
    sum(out.square().mean() for out in together).backward()
    for (name, a), b in zip(model.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for (name, a), b in zip(model.state_dict().items(), fused.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("slot", ["mask", "se"])
def test_fused_batch_must_split_into_task_slices(images: torch.Tensor, slot: str) -> None:
    model = tiny(slot)
    for rows in (4, 7):  # neither is 3 equal task slices
        with pytest.raises(ValueError, match=f"fused batch of {rows} is not 3 equal task slices"):
            model.features(images[:1].repeat(rows, 1, 1, 1), "all")


def test_forward_all_without_slots_computes_the_features_once(images: torch.Tensor) -> None:
    model = tiny("none")
    z = model.features(images, None)
    for t, out in enumerate(model.forward_all(images)):
        torch.testing.assert_close(out, model.head(z, t))


_ODD_BATCH_STEPS = """
import sys
import torch
from roaming import masks
from roaming.models import build_model, masked_layers
width, options = float(sys.argv[1]), dict(arg.split("=") for arg in sys.argv[2:])
model = build_model("resnet18", head_sizes=[2] * 8, slot="mask", width=width, **options)
generator = torch.Generator().manual_seed(0)
for _, slot, _ in masked_layers(model):  # p = 0.1: compact downsamples read a few channels
    slot.mask.copy_(masks.initial_mask(*slot.mask.shape, 0.1, generator))
for _ in range(2):
    for task in range(8):
        model(torch.rand(3, 3, 78, 64), task).float().square().mean().backward()
"""


@pytest.mark.parametrize(
    "args", [["0.125"], ["0.5", "compute=skip", "precision=bf16"], ["0.5", "compute=skip"]]
)
def test_default_memory_formats_train_clear_of_the_nhwc_heap_corruption(args) -> None:
    """The CPU backward of an NHWC strided 1×1 conv with fewer than 16 input channels writes
    past oneDNN's workspace (AVX-512 CPUs; glibc's checks abort): the defaults keep such convs
    NCHW, at small widths and when ResNet-18 skips (its compact downsamples)."""
    env = os.environ | {"MALLOC_CHECK_": "3"}
    command = [sys.executable, "-c", _ODD_BATCH_STEPS, *args]
    done = subprocess.run(command, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
