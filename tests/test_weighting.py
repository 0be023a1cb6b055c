"""Loss weightings of the shared-feature methods: uniform sum, GradNorm, MGDA-UB."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from roaming.methods.weighting import MGDAUB, GradNorm, Uniform, _gram, make_weighting


class Toy(nn.Module):
    """A shared linear layer W and one linear head per task: L_t = scale_t · mean(head_t(Wx)²)."""

    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(4, 3, bias=False)
        self.heads = nn.ModuleList(nn.Linear(3, 1, bias=False) for _ in scales)
        self.scales = scales
        self.x = torch.randn(16, 4)

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.shared(self.x)
        losses = [
            s * head(z).pow(2).mean() for s, head in zip(self.scales, self.heads, strict=True)
        ]
        return torch.stack(losses), z


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _reference_grads(model: Toy, weights: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    losses, _ = model.losses()
    (weights * losses).sum().backward()
    grads = _grads(model)
    model.zero_grad()
    return grads


def test_uniform_is_the_plain_sum() -> None:
    model = Toy([1.0, 2.0, 0.5])
    expected = _reference_grads(model, torch.ones(3))
    Uniform().backward(*model.losses())
    for got, want in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(got, want)


def _gradient_norms(model: Toy, weights: torch.Tensor) -> torch.Tensor:
    losses, _ = model.losses()
    return torch.stack(
        [
            torch.autograd.grad(w * loss, model.shared.weight, retain_graph=True)[0].norm()
            for w, loss in zip(weights, losses, strict=True)
        ]
    )


def test_gradnorm_first_batch_gradients() -> None:
    """Network: ∇ Σ w_i L_i. Weights: d/dw Σ|G_i − mean(G)| (all ratios are 1 on the first
    batch), so the task whose gradient is larger than the mean is pushed down, the other up."""
    model = Toy([10.0, 1.0])
    gradnorm = GradNorm(2, model.shared.weight)
    expected = _reference_grads(model, torch.ones(2))
    norms = _gradient_norms(model, torch.ones(2))
    gradnorm.backward(*model.losses())
    for got, want in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(got, want)
    # G_i = w_i·‖∇L_i‖, target = mean(G) (constant): d/dw_i |G_i − t| = sign(G_i − t)·‖∇L_i‖.
    target = norms.mean()
    torch.testing.assert_close(gradnorm.weights.grad, torch.sign(norms - target) * norms)
    assert gradnorm.weights.grad[0] > 0 > gradnorm.weights.grad[1]
    torch.testing.assert_close(gradnorm.initial_losses, model.losses()[0].detach())


def test_gradnorm_target_follows_relative_inverse_training_rates() -> None:
    """Later batch: target_i = mean(G)·(r_i / mean(r))^α with r_i = L_i / L_i(0)."""
    model = Toy([4.0, 1.0, 2.0])
    gradnorm = GradNorm(3, model.shared.weight, alpha=0.5)
    weights = torch.tensor([0.5, 1.5, 1.0])
    with torch.no_grad():
        gradnorm.weights.copy_(weights)
    losses = model.losses()[0].detach()
    initial = losses * torch.tensor([2.0, 1.0, 4.0])  # task 1 trains slowest, task 2 fastest
    gradnorm.initial_losses = initial.clone()
    raw_norms = _gradient_norms(model, torch.ones(3))
    gradnorm.backward(*model.losses())
    norms = weights * raw_norms
    ratios = losses / initial
    target = norms.mean() * (ratios / ratios.mean()) ** 0.5
    torch.testing.assert_close(gradnorm.weights.grad, torch.sign(norms - target) * raw_norms)
    torch.testing.assert_close(gradnorm.initial_losses, initial)  # kept from the first batch


def test_gradnorm_waits_for_a_positive_initial_loss() -> None:
    model = Toy([1.0, 2.0])
    gradnorm = GradNorm(2, model.shared.weight)
    gradnorm.initial_losses = torch.tensor([0.0, 5.0])  # task 0 had no valid pixel at first
    gradnorm.backward(*model.losses())
    assert torch.isfinite(gradnorm.weights.grad).all()
    torch.testing.assert_close(
        gradnorm.initial_losses, torch.stack([model.losses()[0][0].detach(), torch.tensor(5.0)])
    )


def test_gradnorm_balances_gradient_norms_and_keeps_weights_positive() -> None:
    model = Toy([10.0, 1.0, 3.0])
    gradnorm = GradNorm(3, model.shared.weight, alpha=0.0)
    for parameter in model.heads.parameters():
        parameter.requires_grad_(False)  # only the weights move: the norms depend on them alone
    model.shared.weight.requires_grad_(True)
    optimizer = torch.optim.Adam(gradnorm.parameters(), lr=0.05)
    before = _gradient_norms(model, gradnorm.weights.detach())
    for _ in range(200):
        optimizer.zero_grad()
        gradnorm.backward(*model.losses())
        model.shared.weight.grad = None
        optimizer.step()
        gradnorm.after_step()
    after = _gradient_norms(model, gradnorm.weights.detach())
    assert before.max() / before.min() > 5
    assert after.max() / after.min() < 1.2  # α = 0: every task gets the mean gradient norm
    assert torch.all(gradnorm.weights > 0)
    torch.testing.assert_close(gradnorm.weights.sum(), torch.tensor(3.0))


def test_gradnorm_renormalises_and_round_trips() -> None:
    model = Toy([1.0, 1.0, 1.0])
    gradnorm = GradNorm(3, model.shared.weight)
    with torch.no_grad():
        gradnorm.weights.copy_(torch.tensor([2.0, -1.0, 5.0]))
    gradnorm.after_step()
    assert torch.all(gradnorm.weights > 0)
    torch.testing.assert_close(gradnorm.weights.sum(), torch.tensor(3.0))
    gradnorm.initial_losses = torch.tensor([1.0, 2.0, 3.0])
    restored = GradNorm(3, model.shared.weight)
    restored.load_state_dict(gradnorm.state_dict())
    torch.testing.assert_close(restored.weights.detach(), gradnorm.weights.detach())
    torch.testing.assert_close(restored.initial_losses, gradnorm.initial_losses)
    torch.testing.assert_close(restored.epoch_weights(), gradnorm.weights.detach())


class Orthogonal(nn.Module):
    """A representation z = Wx whose task losses depend on disjoint coordinates of z."""

    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(3, len(scales), bias=False)
        self.scales = scales
        self.x = torch.randn(8, 3)

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.shared(self.x)
        return torch.stack([s * z[:, t].sum() for t, s in enumerate(self.scales)]), z


def test_mgda_ub_equal_orthogonal_gradients_get_equal_weights() -> None:
    model = Orthogonal([1.0, 1.0])
    mgda = MGDAUB(2)
    mgda.backward(*model.losses())
    got = model.shared.weight.grad.clone()
    model.zero_grad()
    (0.5 * model.losses()[0]).sum().backward()
    torch.testing.assert_close(got, model.shared.weight.grad)
    torch.testing.assert_close(mgda.epoch_weights(), torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_mgda_ub_weights_favour_the_smaller_gradient() -> None:
    """Orthogonal gradients of norms a and b: the min-norm point weighs them b²:a²."""
    model = Orthogonal([1.0, 3.0])
    mgda = MGDAUB(2)
    mgda.backward(*model.losses())
    mgda.backward(*model.losses())
    torch.testing.assert_close(mgda.epoch_weights(), torch.tensor([0.9, 0.1], dtype=torch.float64))
    torch.testing.assert_close(mgda.epoch_weights(), torch.zeros(2, dtype=torch.float64))


def test_gram_in_column_blocks_equals_the_whole_product() -> None:
    matrix = torch.randn(5, 1000, generator=torch.Generator().manual_seed(0))
    whole = matrix.double() @ matrix.double().T
    torch.testing.assert_close(_gram(matrix, chunk=64), whole)
    assert _gram(matrix).dtype == torch.float64


def test_mgda_ub_needs_the_representation() -> None:
    model = Orthogonal([1.0, 1.0])
    with pytest.raises(ValueError, match="shared representation"):
        MGDAUB(2).backward(model.losses()[0], None)


def test_make_weighting() -> None:
    weight = nn.Parameter(torch.zeros(2, 2))
    assert isinstance(make_weighting("sum", 3, weight), Uniform)
    assert make_weighting("gradnorm", 3, weight, 1.5).alpha == 1.5
    assert make_weighting("gradnorm", 3, weight).alpha == 0.5
    assert isinstance(make_weighting("mgda", 3, weight), MGDAUB)
    with pytest.raises(ValueError, match="unknown loss weighting 'pcgrad'"):
        make_weighting("pcgrad", 3, weight)
