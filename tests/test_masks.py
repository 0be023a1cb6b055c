"""Tests for roaming.masks: initial cover, update events (Lemma 1), least-align, bookkeeping."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roaming.masks import (
    can_roam,
    event_limit,
    initial_mask,
    least_align_swap,
    random_swap,
    roaming_budget,
    target_active_count,
    update_progress,
)

State = tuple[torch.Tensor, torch.Tensor]
FAST = settings(max_examples=100, deadline=None)

tasks_st = st.integers(1, 15)
channels_st = st.integers(1, 48)
sharing_st = st.one_of(st.floats(0.01, 1.0), st.sampled_from([0.1, 0.5, 0.6, 0.8, 0.9, 1.0]))
seeds_st = st.integers(0, 2**32 - 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bools(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def cover_count(task: int, num_tasks: int, num_channels: int) -> int:
    """Channels the minimal cover j ≡ t (mod T) gives task t."""
    return len(range(task, num_channels, num_tasks))


# --- initialisation -------------------------------------------------------------------------


@pytest.mark.parametrize("num_tasks", [8, 15])
@pytest.mark.parametrize(
    ("sharing", "expected"),
    [
        (0.8, [52, 103, 205, 410]),
        (0.6, [39, 77, 154, 308]),
        (0.9, [58, 116, 231, 461]),
        (0.5, [32, 64, 128, 256]),
    ],
)
def test_active_counts_match_reference_table(
    num_tasks: int, sharing: float, expected: list[int]
) -> None:
    for num_channels, count in zip([64, 128, 256, 512], expected, strict=True):
        mask = initial_mask(num_tasks, num_channels, sharing, gen(0))
        assert mask.sum(dim=1).tolist() == [count] * num_tasks


def test_fill_target_resolves_float_boundaries_exactly() -> None:
    # In binary 1 - 0.9 < 0.1, so the reference's float test leaves all 10 channels active.
    assert target_active_count(10, 0.9) == 9
    # Figure 1 of the paper: 10 units at p = 0.6 → 6 active, 4 updates.
    assert target_active_count(10, 0.6) == 6
    assert target_active_count(10, 0.7) == 7
    assert target_active_count(3, 0.5) == 2  # 1.5 zeros → 1 zero
    assert target_active_count(10, 1e-12) == 1  # never zero channels


@given(tasks_st, channels_st, sharing_st, seeds_st)
@FAST
def test_initial_mask_covers_every_channel_with_reference_counts(
    num_tasks: int, num_channels: int, sharing: float, seed: int
) -> None:
    mask = initial_mask(num_tasks, num_channels, sharing, gen(seed))
    assert mask.dtype == torch.bool
    assert mask.shape == (num_tasks, num_channels)
    assert bool(mask.any(dim=0).all())
    target = target_active_count(num_channels, sharing)
    for task in range(num_tasks):
        expected = max(target, cover_count(task, num_tasks, num_channels))
        if sharing == 1.0:
            expected = num_channels
        assert int(mask[task].sum()) == expected
        # The cover channels survive the random fill.
        assert bool(mask[task, task::num_tasks].all())


@given(tasks_st, channels_st, seeds_st)
@FAST
def test_full_sharing_is_all_ones(num_tasks: int, num_channels: int, seed: int) -> None:
    assert bool(initial_mask(num_tasks, num_channels, 1.0, gen(seed)).all())


@given(tasks_st, st.integers(15, 512), seeds_st)
@FAST
def test_tiny_sharing_gives_disjoint_partition(
    num_tasks: int, num_channels: int, seed: int
) -> None:
    mask = initial_mask(num_tasks, num_channels, 1e-6, gen(seed))
    assert mask.sum(dim=0).tolist() == [1] * num_channels
    expected = [[j % num_tasks == t for j in range(num_channels)] for t in range(num_tasks)]
    assert mask.tolist() == expected


def test_more_tasks_than_channels_still_gives_each_task_a_channel() -> None:
    mask = initial_mask(5, 3, 0.01, gen(0))
    assert mask[:3].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert mask[3:].sum(dim=1).tolist() == [1, 1]


def test_random_fill_is_reproducible_from_the_seed() -> None:
    first = initial_mask(8, 512, 0.5, gen(123))
    assert torch.equal(first, initial_mask(8, 512, 0.5, gen(123)))
    assert not torch.equal(first, initial_mask(8, 512, 0.5, gen(124)))


def test_random_fill_is_uniform_over_inactive_channels() -> None:
    # T=2, N=4, p=0.75: task 0 has cover {0, 2} and gets one of {1, 3}, each with probability 1/2.
    g = gen(7)
    picks = [int(initial_mask(2, 4, 0.75, g)[0, 1]) for _ in range(2000)]
    assert 850 < sum(picks) < 1150


@pytest.mark.parametrize("sharing", [0.0, -0.2, 1.5, math.nan])
def test_bad_sharing_ratio_is_rejected(sharing: float) -> None:
    with pytest.raises(ValueError, match=r"sharing ratio p must be in \(0, 1\], got"):
        initial_mask(2, 8, sharing, gen(0))


@pytest.mark.parametrize(
    ("num_tasks", "num_channels", "message"),
    [(0, 8, "num_tasks must be >= 1, got 0"), (2, 0, "num_channels must be >= 1, got 0")],
)
def test_bad_sizes_are_rejected(num_tasks: int, num_channels: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        initial_mask(num_tasks, num_channels, 0.5, gen(0))


def test_cuda_style_generator_is_rejected_before_drawing() -> None:
    class FakeGenerator:
        device = torch.device("meta")

    with pytest.raises(ValueError, match=r"CPU torch\.Generator"):
        initial_mask(2, 8, 0.5, FakeGenerator())  # type: ignore[arg-type]


# --- update events ----------------------------------------------------------------------------


def check_event(before: State, after: State) -> None:
    """The invariants of one update event, task by task."""
    mask, history = before
    new_mask, new_history = after
    assert new_mask.dtype == torch.bool and new_history.dtype == torch.bool
    assert torch.equal(new_history, history | new_mask)
    for task in range(mask.shape[0]):
        on = torch.nonzero(new_mask[task] & ~mask[task]).squeeze(1).tolist()
        off = torch.nonzero(mask[task] & ~new_mask[task]).squeeze(1).tolist()
        if bool(history[task].all()):
            assert on == [] and off == []
        else:
            assert len(on) == 1 and len(off) == 1
            assert not bool(history[task, on[0]])
            assert int(new_history[task].sum()) == int(history[task].sum()) + 1


def roam_to_the_end(
    mask: torch.Tensor, history: torch.Tensor, step: Callable[[torch.Tensor, torch.Tensor], State]
) -> State:
    """Run z events, checking every event and the count invariant; return the final state."""
    counts = mask.sum(dim=1)
    budget = roaming_budget(history)
    for done in range(budget):
        assert roaming_budget(history) == budget - done
        assert can_roam(history)
        new_mask, new_history = step(mask, history)
        check_event((mask, history), (new_mask, new_history))
        assert torch.equal(new_mask.sum(dim=1), counts)
        mask, history = new_mask, new_history
    return mask, history


@given(tasks_st, channels_st, sharing_st, seeds_st)
@example(8, 48, 0.1, 0)
@example(3, 10, 0.05, 1)
@FAST
def test_random_roaming_serves_every_channel_to_every_task(
    num_tasks: int, num_channels: int, sharing: float, seed: int
) -> None:
    g = gen(seed)
    mask = initial_mask(num_tasks, num_channels, sharing, g)
    counts = mask.sum(dim=1)
    assert roaming_budget(mask) == int((num_channels - counts).max())
    final, history = roam_to_the_end(mask, mask.clone(), lambda m, h: random_swap(m, h, g))
    assert bool(history.all())  # Lemma 1
    assert not can_roam(history) and roaming_budget(history) == 0
    again = random_swap(final, history, g)
    assert torch.equal(again[0], final) and torch.equal(again[1], history)


def test_unequal_task_counts_all_finish() -> None:
    # Small p: the cover gives 4/3/3 channels and the fill adds none; task 0 finishes first.
    g = gen(3)
    mask = initial_mask(3, 10, 0.05, g)
    assert mask.sum(dim=1).tolist() == [4, 3, 3]
    history = mask.clone()
    assert roaming_budget(history) == 7
    for _ in range(6):
        mask, history = random_swap(mask, history, g)
    assert (~history).sum(dim=1).tolist() == [0, 1, 1]
    last_mask, last_history = random_swap(mask, history, g)
    assert torch.equal(last_mask[0], mask[0])
    assert (last_mask[1:] != mask[1:]).sum(dim=1).tolist() == [2, 2]
    assert bool(last_history.all())
    assert last_mask.sum(dim=1).tolist() == [4, 3, 3]


def test_random_swap_draws_uniformly() -> None:
    mask = bools([[1, 1, 0, 0]])
    g = gen(11)
    ons, offs = [0, 0, 0, 0], [0, 0, 0, 0]
    for _ in range(2000):
        new, _ = random_swap(mask, mask, g)
        ons[int(torch.nonzero(new[0] & ~mask[0]))] += 1
        offs[int(torch.nonzero(mask[0] & ~new[0]))] += 1
    assert ons[:2] == [0, 0] and offs[2:] == [0, 0]
    assert all(850 < n < 1150 for n in ons[2:] + offs[:2])


def test_random_swap_is_reproducible_and_leaves_inputs_alone() -> None:
    mask = initial_mask(4, 32, 0.6, gen(0))
    history = mask.clone()
    mask_copy, history_copy = mask.clone(), history.clone()
    first = random_swap(mask, history, gen(5))
    second = random_swap(mask, history, gen(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], mask)
    assert torch.equal(mask, mask_copy) and torch.equal(history, history_copy)


@pytest.mark.parametrize(
    ("mask", "history", "message"),
    [
        (bools([[1, 0]]), bools([[0, 0]]), "missing from history"),
        (bools([[1, 0]]), bools([[1, 0, 0]]), "shapes differ"),
        (torch.ones(1, 2), bools([[1, 1]]), "mask must be a 2-D bool tensor"),
        (bools([1, 0]), bools([1, 0]), "mask must be a 2-D bool tensor"),
        (bools([[0, 0]]), bools([[1, 0]]), r"tasks \[0\] have no active channel"),
    ],
)
def test_bad_state_is_rejected(mask: torch.Tensor, history: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        random_swap(mask, history, gen(0))
    with pytest.raises(ValueError, match=message):
        least_align_swap(mask, history, torch.ones(mask.shape[-1], 3))


# --- least_align ------------------------------------------------------------------------------


def hand_built_filters() -> torch.Tensor:
    """Six 3x1x1 conv filters: 0, 1, 4, 5 parallel; 2 and 3 orthogonal to them and each other."""
    rows = [[1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [-3, 0, 0]]
    return torch.tensor(rows, dtype=torch.float32).reshape(6, 3, 1, 1)


def test_least_align_picks_the_intended_channels() -> None:
    # Task 0: active {0, 1, 2}, used-but-inactive 5 (the highest score: the reference's bug would
    # "discard" it), never used {3, 4}. Scores: 0→1, 1→1, 2→0, 3→0, 4→2, 5→2.
    # Task 1: active {3, 4}. Scores: 0→1, 1→1, 2→0, 3→0, 4→0, 5→1.
    mask = bools([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    history = bools([[1, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 0]])
    new_mask, new_history = least_align_swap(mask, history, hand_built_filters())
    assert new_mask.tolist() == [[0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 1, 0]]
    assert new_history.tolist() == [[1, 1, 1, 1, 0, 1], [0, 0, 1, 1, 1, 0]]


def test_least_align_prefers_orthogonal_and_drops_parallel() -> None:
    # Active {0, 2}: orthogonal. Candidates 1 (parallel to 0) and 3 (orthogonal to both): take 3.
    # Dropping: 0 and 2 both score 0 → lowest index 0.
    mask = bools([[1, 0, 1, 0, 0, 0]])
    new_mask, _ = least_align_swap(mask, mask | bools([[0, 0, 0, 0, 1, 1]]), hand_built_filters())
    assert new_mask.tolist() == [[0, 0, 1, 1, 0, 0]]
    # Active {0, 1, 3}: 0 and 1 are parallel (score 1 each), 3 scores 0: drop 0, take 2 over 4.
    mask = bools([[1, 1, 0, 1, 0, 0]])
    new_mask, _ = least_align_swap(mask, mask, hand_built_filters())
    assert new_mask.tolist() == [[0, 1, 1, 1, 0, 0]]


def test_least_align_skips_finished_tasks_and_handles_zero_filters() -> None:
    weight = torch.zeros(4, 2)
    weight[1, 0] = 1.0
    mask = bools([[1, 1, 0, 0], [1, 1, 1, 1]])
    new_mask, new_history = least_align_swap(mask, mask, weight)
    # All scores are 0 (zero filters are orthogonal to everything): lowest indices win.
    assert new_mask.tolist() == [[0, 1, 1, 0], [1, 1, 1, 1]]
    assert new_history.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


@given(tasks_st, st.integers(1, 32), sharing_st, seeds_st)
@example(4, 32, 0.2, 0)
@FAST
def test_least_align_roaming_keeps_counts_and_serves_every_channel(
    num_tasks: int, num_channels: int, sharing: float, seed: int
) -> None:
    g = gen(seed)
    mask = initial_mask(num_tasks, num_channels, sharing, g)
    weight = torch.randn(num_channels, 2, 3, 3, generator=g)
    weight[0] = 0.0  # a dead filter must not produce NaN scores

    def step(m: torch.Tensor, h: torch.Tensor) -> State:
        return least_align_swap(m, h, weight)

    assert torch.equal(step(mask, mask)[0], step(mask, mask)[0])
    final, history = roam_to_the_end(mask, mask.clone(), step)
    assert bool(history.all())
    assert torch.equal(step(final, history)[0], final)


def test_least_align_rejects_weight_of_the_wrong_width() -> None:
    mask = bools([[1, 0, 0]])
    with pytest.raises(ValueError, match=r"3 output channels first, got shape \(4, 3\)"):
        least_align_swap(mask, mask, torch.ones(4, 3))


# --- bookkeeping ------------------------------------------------------------------------------


def test_update_progress() -> None:
    assert update_progress(0, 10) == 0.0
    assert update_progress(5, 10) == 0.5
    assert update_progress(12, 10) == 1.0
    assert update_progress(0, 0) == 1.0
    with pytest.raises(ValueError, match="events_done=-1"):
        update_progress(-1, 10)
    with pytest.raises(ValueError, match="budget=-3"):
        update_progress(1, -3)


def test_event_limit_rounds_like_the_reference() -> None:
    assert event_limit(102, 1.0) == 102
    assert event_limit(10, 0.25) == 2  # 2.5 rounds half to even
    assert event_limit(7, 0.5) == 4  # 3.5 rounds half to even
    assert event_limit(12, 0.3) == 4
    assert event_limit(0, 0.5) == 0
    for ratio in (0.0, -0.1, 1.01, math.nan):
        with pytest.raises(ValueError, match=r"update_ratio must be in \(0, 1\], got"):
            event_limit(10, ratio)
    with pytest.raises(ValueError, match="budget must be >= 0, got -1"):
        event_limit(-1, 0.5)


def test_budget_and_can_roam_on_a_hand_built_history() -> None:
    history = bools([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert roaming_budget(history) == 3
    assert can_roam(history)
    assert not can_roam(torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="history must be a 2-D bool tensor"):
        roaming_budget(history.int())
