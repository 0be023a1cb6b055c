"""Tests of the multi-task SegNet (tiny width, CPU): layout, masks, slots, BN modes, gradients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from roaming.models import (
    ConvBlock,
    MultiTaskModel,
    SegNet,
    SESlot,
    build_model,
    masked_layers,
)

HEAD_SIZES = (1, 3, 2)
WIDTH = 0.125  # filters 8-16-32-64-64
# (in, out) channels of the 26 blocks in forward order at WIDTH (reference ×8, docs/protocol.md §3).
ENCODER = [(3, 8), (8, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 32)]
ENCODER += [(32, 64), (64, 64), (64, 64), (64, 64), (64, 64), (64, 64)]
DECODER = [(64, 64), (64, 64), (64, 64), (64, 32), (32, 32), (32, 32)]
DECODER += [(32, 16), (16, 16), (16, 16), (16, 8), (8, 8), (8, 8), (8, 8)]
DEPTHS = {"encoder": (2, 2, 3, 3, 3), "decoder": (3, 3, 3, 2, 2)}
EXPECTED_NAMES = [
    f"{part}.{level}.{block}"
    for part in ("encoder", "decoder")
    for level, depth in enumerate(DEPTHS[part])
    for block in range(depth)
]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny convs run fastest on one thread; intra-op threading costs seconds on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(slot: str = "none", bn_running_stats: bool = False, seed: int = 0) -> SegNet:
    torch.manual_seed(seed)
    return SegNet(HEAD_SIZES, slot=slot, width=WIDTH, bn_running_stats=bn_running_stats)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("slot", ["none", "mask", "se"])
def test_output_shape_per_head(slot: str, images: torch.Tensor) -> None:
    model = build_model("segnet", head_sizes=HEAD_SIZES, slot=slot, width=WIDTH)
    assert isinstance(model, SegNet) and isinstance(model, MultiTaskModel)
    assert model.num_tasks == len(HEAD_SIZES)
    assert model.task_specific == (slot != "none")
    with torch.no_grad():
        for task, size in enumerate(HEAD_SIZES):
            assert model.features(images, task).shape == (2, 8, 32, 64)
            assert model(images, task).shape == (2, size, 32, 64)


def test_masked_layers_names_and_channels() -> None:
    layers = masked_layers(tiny("mask"))
    assert len(layers) == 26
    assert [name for name, _, _ in layers] == EXPECTED_NAMES
    for (_, slot, conv), (c_in, c_out) in zip(layers, ENCODER + DECODER, strict=True):
        assert (conv.in_channels, conv.out_channels) == (c_in, c_out)
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is not None
        assert slot.mask.shape == slot.history.shape == (len(HEAD_SIZES), c_out)
        assert bool(slot.mask.all()) and bool(slot.history.all())
    assert masked_layers(tiny("none")) == masked_layers(tiny("se")) == []


def test_full_width_has_reference_channels() -> None:
    layers = masked_layers(SegNet([1, 1], slot="mask"))
    pairs = [(conv.in_channels, conv.out_channels) for _, _, conv in layers]
    assert pairs == [(3 if i == 3 else i * 8, o * 8) for i, o in ENCODER + DECODER]


def test_blocks_heads_and_init() -> None:
    model = tiny("mask")
    blocks = [m for m in model.modules() if isinstance(m, ConvBlock)]
    assert len(blocks) == 26 and all(isinstance(b.bn, nn.BatchNorm2d) for b in blocks)
    assert model.last_shared_conv is masked_layers(model)[-1][2]
    conv = model.last_shared_conv  # Xavier-normal: std = sqrt(2 / (fan_in + fan_out))
    assert conv.weight.std().item() == pytest.approx((2 / (2 * 8 * 9)) ** 0.5, rel=0.15)
    big = model.decoder[0][0].conv  # 64→64 3×3, enough weights for a tight estimate
    assert big.weight.std().item() == pytest.approx((2 / (2 * 64 * 9)) ** 0.5, rel=0.02)
    assert all(bool((b.conv.bias == 0).all()) for b in blocks)
    for head, size in zip(model.heads, HEAD_SIZES, strict=True):
        first, second = head
        assert first.kernel_size == (3, 3) and first.out_channels == 8
        assert second.kernel_size == (1, 1) and second.out_channels == size
        assert bool((first.bias == 0).all()) and bool((second.bias == 0).all())
    slotted = {id(m) for b in blocks for m in b.modules()}
    assert not any(id(m) in slotted for m in model.heads.modules())


@pytest.mark.parametrize("layer", ["encoder.2.1", "decoder.1.0", "decoder.4.1"])
def test_masked_channel_is_zero_and_gets_no_gradient(layer: str, images: torch.Tensor) -> None:
    model = tiny("mask")
    slot, conv = {name: (slot, conv) for name, slot, conv in masked_layers(model)}[layer]
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
    assert grads[channel] == 0 and conv.bias.grad[channel] == 0
    assert bool((grads[torch.arange(grads.numel()) != channel] > 0).all())
    assert filter_grads(1)[channel] > 0  # the other task still trains that filter
    assert bool((outputs["out"][:, channel] != 0).any())


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


def test_se_slot_is_per_task(images: torch.Tensor) -> None:
    model = tiny("se")
    slots = [m for m in model.modules() if isinstance(m, SESlot)]
    assert len(slots) == 26 and len(slots[0].excitations) == len(HEAD_SIZES)
    with torch.no_grad():
        before = [model.features(images, task) for task in range(2)]
        for slot in slots:
            slot.excitations[1][-2].bias.add_(1.0)
        after = [model.features(images, task) for task in range(2)]
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])


@pytest.mark.parametrize("size", [(32, 48), (40, 64), (16, 16)])
def test_input_size_must_divide_by_32(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny().features(torch.rand(2, 3, *size), None)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="head_sizes"):
        SegNet([])
    with pytest.raises(ValueError, match="width"):
        SegNet([1], width=0)
    with pytest.raises(ValueError, match="'masks'"):
        SegNet([1], slot="masks", width=WIDTH)


def test_batch_statistics_bn_depends_on_eval_batch(images: torch.Tensor) -> None:
    model = tiny("none", bn_running_stats=False).eval()
    assert all(m.running_mean is None for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        assert not torch.allclose(model(images, 0)[:1], model(images[:1], 0))


def test_running_stats_bn_uses_running_averages_at_eval(images: torch.Tensor) -> None:
    model = tiny("none", bn_running_stats=True)
    with torch.no_grad():
        model(images, 0)  # one training step of running statistics
        model.eval()
        torch.testing.assert_close(model(images, 0)[:1], model(images[:1], 0))
    bn = model.encoder[0][0].bn
    assert bn.num_batches_tracked == 1 and not torch.equal(bn.running_mean, torch.zeros(8))


def test_gradients_reach_every_conv(images: torch.Tensor) -> None:
    model = tiny("none")
    z = model.features(images, None)
    sum(model.head(z, task).pow(2).mean() for task in range(model.num_tasks)).backward()
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convs) == 26 + 2 * len(HEAD_SIZES)
    for name, conv in convs.items():
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0, name
        assert conv.bias.grad is not None and conv.bias.grad.abs().sum() > 0, name
