"""Tests of the CelebA binary-attribute metrics: a hand-computed case and properties."""

from __future__ import annotations

import itertools
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from host_copies import NoHostToDevice
from hypothesis import given, settings
from hypothesis import strategies as st

from roaming.metrics import EPS, BinaryCounts, binary_metrics

NAMES = ["a", "b", "c", "d"]


def counts_of(probabilities: torch.Tensor, targets: torch.Tensor) -> BinaryCounts:
    counts = BinaryCounts.zeros(probabilities.shape[1])
    counts.update(probabilities, targets)
    return counts


def test_hand_computed_case() -> None:
    probabilities = torch.tensor(
        [
            [0.9, 0.2, 0.5, 0.1],
            [0.4, 0.7, 0.1, 0.2],
            [0.6, 0.3, 0.49, 0.3],
            [0.1, 0.8, 0.0, 0.4],
        ]
    )
    targets = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]])
    counts = counts_of(probabilities, targets)
    # a: half right; b: perfect; c: one false positive (at exactly 0.5) and one miss;
    # d: no positives at all, so P = R = F = 0 by the reference's epsilons.
    assert counts.true_positives.tolist() == [1, 2, 0, 0]
    assert counts.predicted_positives.tolist() == [2, 2, 1, 0]
    assert counts.actual_positives.tolist() == [2, 2, 1, 0]
    assert counts.correct.tolist() == [2, 4, 2, 4]
    assert counts.total.tolist() == [4, 4, 4, 4]
    assert counts.true_positives.dtype == torch.int64

    result = binary_metrics(counts, NAMES)
    p_a, p_b = 1 / (2 + EPS), 2 / (2 + EPS)
    f_a, f_b = 2 * p_a * p_a / (2 * p_a + EPS), 2 * p_b * p_b / (2 * p_b + EPS)
    expected = {
        "precision/a": p_a, "recall/a": p_a, "fscore/a": f_a, "accuracy/a": 0.5,
        "precision/b": p_b, "recall/b": p_b, "fscore/b": f_b, "accuracy/b": 1.0,
        "precision/c": 0.0, "recall/c": 0.0, "fscore/c": 0.0, "accuracy/c": 0.5,
        "precision/d": 0.0, "recall/d": 0.0, "fscore/d": 0.0, "accuracy/d": 1.0,
        "precision": (p_a + p_b) / 4, "recall": (p_a + p_b) / 4, "fscore": (f_a + f_b) / 4,
        "accuracy": 0.75,
    }  # fmt: skip
    assert result.keys() == expected.keys()
    assert all(type(value) is float for value in result.values())
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=0), key
    assert result["fscore/a"] == pytest.approx(0.5, rel=1e-6)
    assert result["fscore/b"] == pytest.approx(1.0, rel=1e-6)


def test_threshold_exactly_half_is_positive() -> None:
    just_below = float(np.nextafter(np.float32(0.5), np.float32(0)))
    counts = counts_of(torch.tensor([[0.5, just_below]]), torch.tensor([[1, 1]]))
    assert counts.predicted_positives.tolist() == [1, 0]
    assert counts.true_positives.tolist() == [1, 0]


def test_merge_equals_union() -> None:
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(10, 3, generator=generator)
    targets = (torch.rand(10, 3, generator=generator) < 0.5).float()
    merged = counts_of(probabilities[:4], targets[:4]).merge(
        counts_of(probabilities[4:], targets[4:])
    )
    whole = counts_of(probabilities, targets)
    for field in ("true_positives", "predicted_positives", "actual_positives", "correct", "total"):
        assert torch.equal(getattr(merged, field), getattr(whole, field)), field


def test_invalid_inputs_are_rejected() -> None:
    counts = BinaryCounts.zeros(2)
    with pytest.raises(ValueError, match="shape"):
        counts.update(torch.rand(3, 2), torch.ones(3, 1))
    with pytest.raises(ValueError, match="attributes"):
        counts.update(torch.rand(3, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="no samples"):
        binary_metrics(counts, ["x", "y"])
    bad = BinaryCounts.zeros(2)
    bad.update(torch.rand(3, 2), torch.tensor([[0, 1], [2, 1], [1, -1]]))
    # counted on the device, reported with the split's metrics (no per-batch host sync)
    with pytest.raises(ValueError, match="targets must be 0 or 1; 2 values were not"):
        binary_metrics(bad, ["x", "y"])
    with pytest.raises(ValueError, match="0 or 1; 2 values"):
        binary_metrics(BinaryCounts.zeros(2).merge(bad), ["x", "y"])
    counts.update(torch.rand(3, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="names"):
        binary_metrics(counts, ["x"])
    with pytest.raises(ValueError, match="unique"):
        binary_metrics(counts, ["x", "x"])
    with pytest.raises(ValueError, match="merge"):
        counts.merge(BinaryCounts.zeros(3))


@st.composite
def split_data(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Probabilities (with exact 0, 0.5 and 1 likely), 0/1 targets and batch boundaries."""
    rows = draw(st.integers(1, 40))
    columns = draw(st.integers(1, 6))
    probability = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 1.0, width=32))
    probabilities = draw(st.lists(probability, min_size=rows * columns, max_size=rows * columns))
    targets = draw(st.lists(st.booleans(), min_size=rows * columns, max_size=rows * columns))
    cuts = sorted(draw(st.sets(st.integers(1, rows - 1), max_size=5)) if rows > 1 else set())
    return (
        torch.tensor(probabilities).view(rows, columns),
        torch.tensor(targets, dtype=torch.float32).view(rows, columns),
        cuts,
    )


@settings(deadline=None, max_examples=100)
@given(split_data())
def test_batched_accumulation_equals_one_shot(
    data: tuple[torch.Tensor, torch.Tensor, list[int]],
) -> None:
    probabilities, targets, cuts = data
    batched = BinaryCounts.zeros(probabilities.shape[1])
    bounds = [0, *cuts, probabilities.shape[0]]
    for start, stop in itertools.pairwise(bounds):
        batched.update(probabilities[start:stop], targets[start:stop])
    names = [f"attr{k}" for k in range(probabilities.shape[1])]
    one_shot = counts_of(probabilities, targets)
    assert binary_metrics(batched, names) == binary_metrics(one_shot, names)


@settings(deadline=None, max_examples=100)
@given(split_data())
def test_agrees_with_numpy_and_stays_in_unit_interval(
    data: tuple[torch.Tensor, torch.Tensor, list[int]],
) -> None:
    probabilities, targets, _ = data
    names = [f"attr{k}" for k in range(probabilities.shape[1])]
    result = binary_metrics(counts_of(probabilities, targets), names)
    assert all(0.0 <= value <= 1.0 for value in result.values())

    predicted = probabilities.numpy() >= 0.5
    actual = targets.numpy() == 1
    tp = (predicted & actual).sum(0)
    precision = tp / (predicted.sum(0) + 1e-7)
    recall = tp / (actual.sum(0) + 1e-7)
    fscore = 2 * precision * recall / (precision + recall + 1e-7)
    accuracy = (predicted == actual).mean(0)
    for metric, values in [
        ("precision", precision),
        ("recall", recall),
        ("fscore", fscore),
        ("accuracy", accuracy),
    ]:
        assert result[metric] == pytest.approx(values.mean(), rel=1e-12, abs=1e-15)
        for name, value in zip(names, values, strict=True):
            assert result[f"{metric}/{name}"] == pytest.approx(value, rel=1e-12, abs=1e-15)


@settings(deadline=None, max_examples=50)
@given(split_data())
def test_perfect_predictions_score_one(
    data: tuple[torch.Tensor, torch.Tensor, list[int]],
) -> None:
    _, targets, _ = data
    names = [f"attr{k}" for k in range(targets.shape[1])]
    result = binary_metrics(counts_of(targets.clone(), targets), names)
    assert result["accuracy"] == 1.0
    for k, name in enumerate(names):
        has_positives = bool(targets[:, k].any())
        expected = 1.0 if has_positives else 0.0  # no positives: the epsilons give 0
        for metric in ("precision", "recall", "fscore"):
            assert result[f"{metric}/{name}"] == pytest.approx(expected, abs=1e-6)


def test_attribute_meter_and_loss_never_read_the_device_per_batch() -> None:
    """On the meta device every host read (``.item()``, ``bool()``, ``.cpu()`` of values)
    raises: updating the meter and computing the loss must not need one,
    nor, after the first batch, a copy of host data to the device."""
    from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUPS
    from roaming.tasks.attributes import AttributeTasks

    tasks = AttributeTasks(ATTRIBUTE_NAMES, TASK_GROUPS, [f"g{i}" for i in range(8)])
    meta = torch.device("meta")
    batch = {"attributes": torch.empty(4, 40, dtype=torch.uint8, device=meta)}
    meter = tasks.meter()
    for guard in (nullcontext(), NoHostToDevice()):
        with guard:
            for t, size in enumerate(tasks.head_sizes):
                output = torch.empty(4, size, device=meta)
                assert tasks.loss(t, output, batch).device == meta
                meter.update(t, output, batch)
    assert all(c.total.device == meta for c in meter.counts)
