"""Tests for roaming.methods.min_norm: the MGDA-UB min-norm weights on the simplex."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from roaming.methods.min_norm import min_norm_weights

FAST = settings(max_examples=100, deadline=None)
# Enough Frank–Wolfe steps for the 1e-5 stopping test to end every run, not the cap.
CONVERGED = 20_000


@st.composite
def gradients(draw: st.DrawFn) -> np.ndarray:
    """T gradients (rows) of dimension d, T in 1..6, d in 1..8."""
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 8)))
    elements = st.floats(-10, 10, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return draw(arrays(np.float64, shape, elements=elements))


def _objective(gram: np.ndarray, alpha: np.ndarray) -> float:
    return float(alpha @ gram @ alpha)


def _scale(gram: np.ndarray) -> float:
    """Tolerances are relative to the largest |G| (1 when G is all zero)."""
    return float(np.abs(gram).max()) or 1.0


def _assert_on_simplex(alpha: np.ndarray) -> None:
    assert np.isfinite(alpha).all()
    assert (alpha >= -1e-12).all()
    assert alpha.sum() == pytest.approx(1.0, abs=1e-9)


def _solve(grads: np.ndarray, **kwargs: int | float) -> tuple[np.ndarray, np.ndarray]:
    gram = grads @ grads.T
    alpha = min_norm_weights(torch.from_numpy(gram), **kwargs)
    assert alpha.dtype == torch.float64
    assert alpha.shape == (grads.shape[0],)
    return gram, alpha.numpy()


@FAST
@given(gradients())
def test_no_worse_than_any_vertex_or_pair(grads: np.ndarray) -> None:
    gram, alpha = _solve(grads)
    _assert_on_simplex(alpha)
    value, tol = _objective(gram, alpha), 1e-12 * _scale(gram)
    n = len(gram)
    assert value <= gram.diagonal().min() + tol
    for i, j in itertools.combinations(range(n), 2):
        # The exact minimiser of ‖γ g_i + (1 − γ) g_j‖², computed directly from the gradients.
        diff = grads[i] - grads[j]
        denom = diff @ diff
        gamma = np.clip(-(grads[j] @ diff) / denom, 0, 1) if denom > 0 else 1.0
        point = gamma * grads[i] + (1 - gamma) * grads[j]
        assert value <= point @ point + tol


@FAST
@given(gradients())
def test_converged_weights_beat_random_simplex_points(grads: np.ndarray) -> None:
    gram, alpha = _solve(grads, max_iter=CONVERGED)
    _assert_on_simplex(alpha)
    samples = np.random.default_rng(0).dirichlet(np.ones(len(gram)), size=300)
    values = np.einsum("ni,ij,nj->n", samples, gram, samples)
    assert _objective(gram, alpha) <= values.min() + 1e-4 * _scale(gram)


@FAST
@given(gradients())
def test_converged_weights_are_kkt_optimal(grads: np.ndarray) -> None:
    # On the simplex, α is optimal iff no vertex has a smaller directional value: (Gα)_i ≥ αᵀGα.
    gram, alpha = _solve(grads, max_iter=CONVERGED)
    g_alpha = gram @ alpha
    assert g_alpha.min() >= alpha @ g_alpha - 1e-4 * _scale(gram)


@FAST
@given(gradients())
def test_default_cap_is_close_to_optimal(grads: np.ndarray) -> None:
    # 250 Frank–Wolfe steps converge as O(1/k): a duality gap of a few 1e-3 of max |G| at worst.
    gram, alpha = _solve(grads)
    g_alpha = gram @ alpha
    assert g_alpha.min() >= alpha @ g_alpha - 1e-2 * _scale(gram)


@pytest.mark.parametrize(
    ("grads", "expected"),
    [
        pytest.param([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5], id="orthogonal"),
        pytest.param([[1.0, 2.0], [3.0, 6.0]], [1.0, 0.0], id="multiple"),
        pytest.param([[3.0, 6.0], [1.0, 2.0]], [0.0, 1.0], id="multiple-reversed"),
        pytest.param([[1.0, -2.0], [0.0, 0.0], [4.0, 1.0]], [0.0, 1.0, 0.0], id="zero"),
        pytest.param([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.5, 0.5, 0.0], id="far-side"),
        pytest.param([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], [0.0, 0.5, 0.5], id="far-side-first"),
        pytest.param([[2.0, -1.0]], [1.0], id="single"),
        pytest.param([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], None, id="all-zero"),
    ],
)
def test_exact_cases(grads: list[list[float]], expected: list[float] | None) -> None:
    _, alpha = _solve(np.array(grads))
    _assert_on_simplex(alpha)
    if expected is not None:
        np.testing.assert_allclose(alpha, expected, atol=1e-9)


def test_three_orthogonal_gradients_reach_uniform_weights() -> None:
    # The pair start is (1/2, 1/2, 0); only Frank–Wolfe steps can bring in the third task.
    _, alpha = _solve(np.eye(3))
    np.testing.assert_allclose(alpha, [1 / 3] * 3, atol=1e-6)


@FAST
@given(gradients())
def test_one_iteration_still_gives_simplex_weights(grads: np.ndarray) -> None:
    _, alpha = _solve(grads, max_iter=1, tolerance=0.0)
    _assert_on_simplex(alpha)


def test_float32_input_gives_float64_weights() -> None:
    gram = torch.tensor([[1.0, 0.2, 0.0], [0.2, 2.0, 0.5], [0.0, 0.5, 3.0]], dtype=torch.float32)
    alpha = min_norm_weights(gram)
    assert alpha.dtype == torch.float64
    assert alpha.shape == (3,)
    assert alpha.device == gram.device
    assert float(alpha.sum()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("shape", [(0, 0), (2, 3), (4,)])
def test_rejects_non_square_gram(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="square"):
        min_norm_weights(torch.zeros(shape))
