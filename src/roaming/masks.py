"""Maximum Roaming channel masks: initialisation and update events (docs/protocol.md §1).

A masked layer with N output channels shared by T tasks keeps two bool tensors of shape (T, N):

* ``mask[t, j]`` — task t currently uses channel j: in task t's forward pass the layer's output
  feature map j is multiplied by 1, otherwise by 0;
* ``history[t, j]`` — task t has used channel j at some point. ``mask ⊆ history`` always holds.

An update event swaps, for every task, one active channel out and one never-used channel in. Each
task keeps its number of active channels (so the sharing ratio p is constant) and its history grows
by exactly one channel. Hence the paper's Lemma 1: a task with z_t never-used channels has used
every channel after z_t events, so after z = max_t z_t events every channel has been trained by
every task, and further events change nothing.

Everything here is a pure function over tensors. Inputs are never mutated; results are new tensors
on the inputs' device. Every random choice comes from an explicit CPU ``torch.Generator``, so a run
is reproducible from its seed. Scheduling (Δ, update_ratio bookkeeping) lives in the training code.

Decisions, compared with the authors' reference code (docs/protocol.md §9):

* Fill target. The reference switches channels on while ``zeros / N > 1 - p`` in floating point,
  which leaves ``N - floor((1 - p) * N)`` active channels; on exact boundaries rounding decides
  (p = 0.9, N = 10 leaves 10 active, not 9, because ``1 - 0.9 < 0.1`` in binary). We use
  ``floor((1 - p) * N + 1e-9)`` zeros, which resolves boundaries as exact arithmetic would and
  agrees with the reference everywhere else (all of its layer widths and ratios). A task always
  keeps at least one channel, and keeps more if the minimal cover already gave it more.
* Per-task skip. The reference skips a whole layer once ANY task has used every channel. The
  minimal cover can give some tasks one channel more than others (small p), so those finish one
  event early and the reference never lets the others finish. We skip per task: a task that has
  used every channel keeps its mask, the others keep roaming, so Lemma 1 holds for every task.
* least_align is the intended version of the paper's ablation; see ``least_align_swap``.
"""

from __future__ import annotations

import math

import torch

# Absorbs the rounding error of (1 - p) * N (about 1e-16 * N), far below the 1 / N resolution.
_FILL_TOLERANCE = 1e-9


def target_active_count(num_channels: int, sharing: float) -> int:
    """Channels per task the random fill aims for: ``N - floor((1 - p) N)``, at least 1.

    This is the reference's "zero fraction ≤ 1 − p" rule with a tolerance for floating-point
    rounding (module docstring). A task whose minimal cover is larger keeps its cover.
    """
    _check_positive("num_channels", num_channels)
    _check_sharing(sharing)
    zeros = math.floor((1.0 - sharing) * num_channels + _FILL_TOLERANCE)
    return max(1, num_channels - zeros)


def initial_mask(
    num_tasks: int, num_channels: int, sharing: float, generator: torch.Generator
) -> torch.Tensor:
    """Initial (T, N) bool mask of one layer for sharing ratio p (docs/protocol.md §1).

    p == 1 gives all ones. Otherwise the minimal cover ``mask[t, j] = (j % T == t)`` makes every
    channel belong to a task, then each task switches on channels drawn uniformly from its
    inactive ones until it has ``target_active_count(N, p)`` of them. The history of a fresh
    layer is a copy of this mask.
    """
    _check_positive("num_tasks", num_tasks)
    _check_positive("num_channels", num_channels)
    _check_sharing(sharing)
    _check_generator(generator)
    if sharing == 1.0:
        return torch.ones((num_tasks, num_channels), dtype=torch.bool)
    channels = torch.arange(num_channels)
    mask = channels.unsqueeze(0) % num_tasks == torch.arange(num_tasks).unsqueeze(1)
    target = target_active_count(num_channels, sharing)
    for task in range(num_tasks):
        inactive = torch.nonzero(~mask[task]).squeeze(1)
        missing = target - (num_channels - inactive.numel())
        if missing > 0:
            order = torch.randperm(inactive.numel(), generator=generator)
            mask[task, inactive[order[:missing]]] = True
    return mask


def roaming_budget(history: torch.Tensor) -> int:
    """Update events this layer still needs until every task has used every channel.

    Each event gives every unfinished task one new channel, so this is the largest number of
    never-used channels of any task; for a fresh layer, ``max_t (N - active_t)``.
    """
    _check_bool_matrix(history, "history")
    return int((~history).sum(dim=1).max())


def can_roam(history: torch.Tensor) -> bool:
    """Whether an update event would still change this layer: some task has a never-used channel."""
    return roaming_budget(history) > 0


def random_swap(
    mask: torch.Tensor, history: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update event with the paper's random strategy; returns the new (mask, history).

    Every task that still has never-used channels activates one drawn uniformly from them and
    deactivates one drawn uniformly from its currently active channels (the channel just
    activated is not a candidate); the other tasks keep their mask (per-task skip, module
    docstring). Draws: all activations, then all discards, in task order. Then
    ``history |= mask``.
    """
    _check_state(mask, history)
    _check_generator(generator)
    current, used = mask.cpu(), history.cpu()
    rows = _roaming_rows(current, used)
    new = current.clone()
    if rows.numel() > 0:
        switch_on = torch.multinomial((~used[rows]).float(), 1, generator=generator).squeeze(1)
        switch_off = torch.multinomial(current[rows].float(), 1, generator=generator).squeeze(1)
        new[rows, switch_off] = False
        new[rows, switch_on] = True
    return new.to(mask.device), (used | new).to(mask.device)


def least_align_swap(
    mask: torch.Tensor, history: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update event with the deterministic least-align strategy; returns (mask, history).

    ``weight`` is the layer's weight with output channels first, e.g. a conv's (N, C, kh, kw);
    filter j is ``weight[j]`` flattened. For task t, a channel's score is the sum of its
    |cosine similarity| with the task's active filters, itself excluded (a zero filter counts as
    orthogonal to every filter). Every task that still has never-used channels activates the
    never-used channel with the lowest score and deactivates the active channel with the
    highest; ties go to the lowest index. Scores use the mask before the event; same per-task
    skip as ``random_swap``. Then ``history |= mask``.

    This is the intended rule; the reference code has two bugs fixed here (docs/protocol.md §9):
    it reshapes (N, C, kh, kw) weights to (C·kh·kw, N) without transposing, so its "filters" are
    not filters, and it picks the discard among all channels in the history, so it may "discard"
    an inactive channel and the mask grows. Its scores also count an active channel's alignment
    with itself (1.0, NaN for a zero filter); we leave it out.
    """
    _check_state(mask, history)
    num_channels = mask.shape[1]
    if weight.ndim == 0 or weight.shape[0] != num_channels:
        raise ValueError(
            f"weight must have the layer's {num_channels} output channels first, "
            f"got shape {tuple(weight.shape)}"
        )
    current, used = mask.cpu(), history.cpu()
    filters = weight.detach().to(device="cpu", dtype=torch.float64).reshape(num_channels, -1)
    unit = filters / filters.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    alignment = (unit @ unit.T).abs()
    alignment.fill_diagonal_(0.0)
    scores = current.double() @ alignment
    switch_on = scores.masked_fill(used, math.inf).argmin(dim=1)
    switch_off = scores.masked_fill(~current, -math.inf).argmax(dim=1)
    rows = _roaming_rows(current, used)
    new = current.clone()
    new[rows, switch_off[rows]] = False
    new[rows, switch_on[rows]] = True
    return new.to(mask.device), (used | new).to(mask.device)


def update_progress(events_done: int, budget: int) -> float:
    """Update progress r(c) = events done / z, capped at 1 (1.0 when z == 0): Figure 1's x-axis.

    ``budget`` is the layer's z from its fresh mask (``roaming_budget`` at initialisation).
    """
    if events_done < 0 or budget < 0:
        raise ValueError(
            f"events_done and budget must be >= 0, got events_done={events_done}, budget={budget}"
        )
    return 1.0 if budget == 0 else min(1.0, events_done / budget)


def event_limit(budget: int, update_ratio: float) -> int:
    """Events a layer with budget z may do under ``update_ratio``: ``round(update_ratio · z)``.

    Python's round (half to even) as in the reference, e.g. ratio 0.5 with z = 5 allows 2.
    """
    if not 0.0 < update_ratio <= 1.0:
        raise ValueError(f"update_ratio must be in (0, 1], got {update_ratio!r}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return round(update_ratio * budget)


def _roaming_rows(mask: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Indices of the tasks an event changes; each must have an active channel to give up."""
    roaming = (~history).any(dim=1)
    stuck = roaming & ~mask.any(dim=1)
    if stuck.any():
        raise ValueError(
            f"tasks {torch.nonzero(stuck).squeeze(1).tolist()} have no active channel to swap out"
        )
    return torch.nonzero(roaming).squeeze(1)


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_sharing(sharing: float) -> None:
    if not 0.0 < sharing <= 1.0:
        raise ValueError(f"sharing ratio p must be in (0, 1], got {sharing!r}")


def _check_generator(generator: torch.Generator) -> None:
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")


def _check_bool_matrix(tensor: torch.Tensor, name: str) -> None:
    if tensor.dtype != torch.bool or tensor.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D bool tensor (tasks, channels), "
            f"got dtype {tensor.dtype} with shape {tuple(tensor.shape)}"
        )


def _check_state(mask: torch.Tensor, history: torch.Tensor) -> None:
    _check_bool_matrix(mask, "mask")
    _check_bool_matrix(history, "history")
    if mask.shape != history.shape:
        raise ValueError(
            f"mask and history shapes differ: {tuple(mask.shape)} vs {tuple(history.shape)}"
        )
    if (mask & ~history).any():
        raise ValueError("mask has active channels missing from history (mask must be ⊆ history)")
