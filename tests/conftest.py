"""Shared fixtures: one small synthetic CelebA, generated and prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from roaming.data.celeba import prepare_celeba
from roaming.data.celeba_fixtures import write_celeba_fixture


@pytest.fixture(scope="session")
def celeba_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic CelebA (384 train / 64 val / 128 test images at 78×64)."""
    root = tmp_path_factory.mktemp("celeba")
    write_celeba_fixture(root / "raw", seed=0, n_train=384, n_val=64, n_test=128, layout="drive")
    prepare_celeba(root / "raw", root / "celeba.h5", progress=False)
    return root / "celeba.h5"
