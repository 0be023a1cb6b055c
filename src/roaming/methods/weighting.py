"""How shared-feature methods turn T task losses into gradients: uniform sum, GradNorm, MGDA-UB.

Each weighting takes one batch's losses (and the shared representation they were computed from,
None after a fused pass of task-specific models, whose weighting is the sum), leaves the gradients
of the network, and of its own parameters if it has any, in ``.grad``, and knows its state for
checkpoints. The training loop steps the optimizer afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from roaming.methods.min_norm import min_norm_weights

WEIGHTINGS = ("sum", "gradnorm", "mgda")
DEFAULT_ALPHA = 0.5
"""GradNorm's asymmetry α (docs/protocol.md §2 and §5: 0.5 for every dataset)."""


class Uniform:
    """Hard-sharing MTL: the plain sum of the task losses (weights 1)."""

    def parameters(self) -> list[nn.Parameter]:
        return []

    def backward(self, losses: Tensor, representation: Tensor | None) -> None:
        losses.sum().backward()

    def after_step(self) -> None:
        """Nothing to do after the optimizer step."""

    def epoch_weights(self) -> Tensor | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


class GradNorm:
    """GradNorm (Chen et al. 2018): trainable task weights w that balance gradient norms.

    ``G_i = ‖∇_W w_i L_i‖`` on ``shared`` (the last shared conv weight). The weights follow
    ``Σ_i |G_i − mean(G)·r_i^α|`` with ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``, the
    target held constant, through the same optimizer as the network; the network follows
    ``Σ_i w_i L_i``. After each step the weights are kept positive and renormalised to sum to
    T. ``L_i(0)`` are the losses of the run's first batch (the reference resets them every
    epoch); a task whose first loss is 0 (no valid pixel) takes its first positive one, and
    counts as training at the mean rate until then.
    """

    def __init__(self, num_tasks: int, shared: nn.Parameter, alpha: float = DEFAULT_ALPHA) -> None:
        self.weights = nn.Parameter(torch.ones(num_tasks, device=shared.device))
        self.shared = shared
        self.alpha = alpha
        self.initial_losses: Tensor | None = None

    def parameters(self) -> list[nn.Parameter]:
        return [self.weights]

    def backward(self, losses: Tensor, representation: Tensor | None) -> None:
        current = losses.detach()
        if self.initial_losses is None:
            self.initial_losses = current.clone()
        self.initial_losses = torch.where(self.initial_losses > 0, self.initial_losses, current)
        # ∇_W w_i L_i = w_i ∇_W L_i: the norms need no second-order graph, only w's.
        raw_norms = torch.stack(
            [torch.autograd.grad(loss, self.shared, retain_graph=True)[0].norm() for loss in losses]
        )
        norms = self.weights.abs() * raw_norms  # w > 0 after every step; abs keeps ‖·‖ exact
        known = self.initial_losses > 0
        ratios = torch.where(known, current / torch.where(known, self.initial_losses, 1), 1)
        relative = ratios / ratios.mean().clamp_min(torch.finfo(ratios.dtype).tiny)
        target = norms.mean().detach() * relative**self.alpha
        (weight_grad,) = torch.autograd.grad((norms - target).abs().sum(), self.weights)
        (self.weights.detach() * losses).sum().backward()
        self.weights.grad = weight_grad  # the weights follow GradNorm's objective only

    @torch.no_grad()
    def after_step(self) -> None:
        self.weights.clamp_(min=1e-6)
        self.weights.mul_(len(self.weights) / self.weights.sum())

    def epoch_weights(self) -> Tensor | None:
        return self.weights.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.detach().clone(), "initial_losses": self.initial_losses}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights.copy_(state["weights"])
        initial = state["initial_losses"]
        self.initial_losses = None if initial is None else initial.to(self.weights.device)


class MGDAUB:
    """MGDA-UB (Sener & Koltun 2018): the min-norm convex combination of the task gradients with
    respect to the shared representation (the upper bound of the parameter-gradient version).

    Per batch: each loss's gradient with respect to the representation (through its head only),
    the min-norm weights α of their convex hull (no gradient normalisation, as the reference),
    then one backward pass of ``Σ α_t L_t``. Unlike the reference, the representation is computed
    once, with gradients, rather than by an extra no-grad forward pass.
    """

    def __init__(self, num_tasks: int) -> None:
        self.alpha_sum = torch.zeros(num_tasks, dtype=torch.float64)
        self.batches = 0

    def parameters(self) -> list[nn.Parameter]:
        return []

    def backward(self, losses: Tensor, representation: Tensor | None) -> None:
        if representation is None:
            raise ValueError("MGDA-UB needs the shared representation the losses came from")
        matrix = torch.stack(
            [
                torch.autograd.grad(loss, representation, retain_graph=True)[0].flatten()
                for loss in losses
            ]
        )
        alpha = min_norm_weights(_gram(matrix).cpu())
        self.alpha_sum += alpha
        self.batches += 1
        (alpha.to(losses.device, losses.dtype) * losses).sum().backward()

    def after_step(self) -> None:
        """Nothing to do after the optimizer step."""

    def epoch_weights(self) -> Tensor | None:
        """The mean α over the batches since the last call (one epoch in the training loop)."""
        mean = self.alpha_sum / max(self.batches, 1)
        self.alpha_sum = torch.zeros_like(self.alpha_sum)
        self.batches = 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        """α is recomputed every batch; only the running mean of the epoch so far is state
        (a run stopped mid-epoch resumes it)."""
        return {"alpha_sum": self.alpha_sum.clone(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:  # checkpoints from before the epoch's mean α was saved hold nothing
            self.alpha_sum = state["alpha_sum"].clone()
            self.batches = state["batches"]


def _gram(matrix: Tensor, chunk: int = 2**20) -> Tensor:
    """``matrix @ matrix.T`` accumulated in float64, a column block at a time: a SegNet
    representation gradient has millions of entries per task, too many to copy whole."""
    gram = torch.zeros(len(matrix), len(matrix), dtype=torch.float64, device=matrix.device)
    for block in matrix.split(chunk, dim=1):
        block = block.double()
        gram += block @ block.T
    return gram


Weighting = Uniform | GradNorm | MGDAUB


def make_weighting(
    kind: str, num_tasks: int, shared: nn.Parameter, alpha: float | None = None
) -> Weighting:
    """The weighting called ``kind`` for ``num_tasks`` tasks; ``shared`` is GradNorm's ``W``."""
    if kind == "sum":
        return Uniform()
    if kind == "gradnorm":
        return GradNorm(num_tasks, shared, DEFAULT_ALPHA if alpha is None else alpha)
    if kind == "mgda":
        return MGDAUB(num_tasks)
    raise ValueError(f"unknown loss weighting {kind!r}; expected one of {', '.join(WEIGHTINGS)}")
