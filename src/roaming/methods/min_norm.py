"""The min-norm point of the convex hull of task gradients: the task weights of MGDA-UB.

MGDA-UB (Sener & Koltun, NeurIPS 2018) weights the task losses by the α on the simplex that
minimises ‖Σ α_t g_t‖². This is their Frank–Wolfe solver (``find_min_norm_element_FW``) written on
the Gram matrix G[i, j] = <g_i, g_j>, so only T×T numbers are needed, never the gradients. Unlike
the reference, whose iteration counter is never incremented (it loops forever when the stopping
test is not met), the iterations here are capped at ``max_iter``.
"""

from __future__ import annotations

import numpy as np
import torch


def _pair_weight(
    aa: np.ndarray | float, ab: np.ndarray | float, bb: np.ndarray | float
) -> np.ndarray:
    """The γ in [0, 1] minimising ‖γ a + (1 − γ) b‖², from <a,a>, <a,b> and <b,b>.

    When a = b (zero denominator) every γ is optimal and γ = 1 is returned, so that a Frank–Wolfe
    step towards a vertex equal to the current point leaves the point where it is.
    """
    denom = aa + bb - 2 * ab
    positive = denom > 0
    return np.where(positive, np.clip((bb - ab) / np.where(positive, denom, 1), 0, 1), 1.0)


def _pair_norm(gamma: np.ndarray, aa: np.ndarray, ab: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """‖γ a + (1 − γ) b‖² from the inner products."""
    return gamma**2 * aa + 2 * gamma * (1 - gamma) * ab + (1 - gamma) ** 2 * bb


def min_norm_weights(
    gram: torch.Tensor, *, max_iter: int = 250, tolerance: float = 1e-5
) -> torch.Tensor:
    """Weights α on the simplex minimising αᵀ G α, for the T×T Gram matrix G of T gradients.

    Frank–Wolfe started from the best pair of gradients; each step moves exactly (line search)
    towards the vertex with the smallest (G α)_t. Stops when ‖Δα‖₁ < ``tolerance`` or after
    ``max_iter`` steps. Computes in float64 and returns float64 of shape (T,) on ``gram``'s device.
    """
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"gram must be a non-empty square matrix, got shape {tuple(gram.shape)}")
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    n = g.shape[0]
    alpha = np.zeros(n)
    if n == 1:
        alpha[0] = 1.0
        return torch.from_numpy(alpha).to(gram.device)

    i, j = np.triu_indices(n, k=1)
    gii, gij, gjj = g[i, i], g[i, j], g[j, j]
    gammas = _pair_weight(gii, gij, gjj)
    best = int(np.argmin(_pair_norm(gammas, gii, gij, gjj)))
    alpha[i[best]] = gammas[best]
    alpha[j[best]] = 1 - gammas[best]

    for _ in range(max_iter):
        g_alpha = g @ alpha
        t = int(np.argmin(g_alpha))
        # γ weighs the current point v = Σ α g, 1 − γ the vertex g_t.
        gamma = float(_pair_weight(alpha @ g_alpha, g_alpha[t], g[t, t]))
        new = gamma * alpha
        new[t] += 1 - gamma
        change = np.abs(new - alpha).sum()
        alpha = new
        if change < tolerance:
            break
    return torch.from_numpy(alpha).to(gram.device)
