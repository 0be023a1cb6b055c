"""Sample-weighted task losses and the task set's metrics over one pass, kept on the device.

Adding a batch launches a few small kernels and never waits for the device: the values are read
once, when the pass is summarised (or when a progress bar asks for its running losses).
"""

from __future__ import annotations

from typing import Any

import torch

from roaming.tasks import TaskSet


class Tracker:
    """The losses and metrics of one pass over a split."""

    def __init__(self, tasks: TaskSet, device: torch.device) -> None:
        self.tasks = tasks
        self.meter = tasks.meter()
        self.loss_sums = torch.zeros(len(tasks.names), dtype=torch.float64, device=device)
        self.samples = 0

    def add(
        self, batch: dict[str, torch.Tensor], results: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """Add one batch's (output, loss) per head; returns the batch's losses, stacked."""
        size = batch["images"].shape[0]
        for t, (output, _) in enumerate(results):
            self.meter.update(t, output, batch)
        losses = torch.stack([loss for _, loss in results])
        self.loss_sums += losses.double() * size
        self.samples += size
        return losses

    def state_dict(self) -> dict[str, Any]:
        """What a pass so far has added, for a checkpoint taken mid-epoch."""
        return {
            "loss_sums": self.loss_sums.cpu(),
            "samples": self.samples,
            "meter": self.meter.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a pass from :meth:`state_dict`."""
        self.loss_sums = state["loss_sums"].to(self.loss_sums.device)
        self.samples = state["samples"]
        self.meter.load_state_dict(state["meter"], self.loss_sums.device)

    def running_losses(self) -> dict[str, str]:
        """Each task's mean loss so far, formatted for a progress bar (waits for the device)."""
        means = (self.loss_sums / max(self.samples, 1)).tolist()
        return {name: f"{value:.3f}" for name, value in zip(self.tasks.names, means, strict=True)}

    def compute(self) -> dict[str, float]:
        """``loss`` (the sum over tasks), ``loss/<task>`` and the task set's metrics."""
        means = (self.loss_sums / self.samples).tolist()
        losses = {
            f"loss/{name}": value for name, value in zip(self.tasks.names, means, strict=True)
        }
        return {"loss": float(sum(means))} | losses | self.meter.compute()


class HostCopy:
    """One batch's losses on their way to the host, read later without draining the device.

    Reading a CUDA tensor (``tolist``) waits for everything queued on its stream, so a check of
    the previous batch's losses after the next step was launched would wait for that step too,
    every batch. Here they are copied at once into pinned memory, without waiting, and an event
    marks the copy: :meth:`values` waits for that event only. On a CPU it is the tensor itself.
    """

    def __init__(self, iteration: int, losses: torch.Tensor) -> None:
        self.iteration = iteration
        self._ready: torch.cuda.Event | None = None
        if losses.device.type == "cuda":
            self._values = losses.detach().to("cpu", non_blocking=True)  # pinned
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._values = losses.detach()

    def values(self) -> list[float]:
        """The losses, once their copy has arrived."""
        if self._ready is not None:
            self._ready.synchronize()
        return self._values.tolist()
