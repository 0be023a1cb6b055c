"""Shared fixtures: small synthetic datasets, generated and prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from roaming.data.celeba import prepare_celeba
from roaming.data.celeba_fixtures import write_celeba_fixture
from roaming.data.dense import prepare_dense, write_dense_fixture


@pytest.fixture(scope="session")
def celeba_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic CelebA (384 train / 64 val / 128 test images at 78×64)."""
    root = tmp_path_factory.mktemp("celeba")
    write_celeba_fixture(root / "raw", seed=0, n_train=384, n_val=64, n_test=128, layout="drive")
    prepare_celeba(root / "raw", root / "celeba.h5", progress=False)
    return root / "celeba.h5"


def _prepared_dense(factory: pytest.TempPathFactory, dataset: str) -> Path:
    root = factory.mktemp(dataset)
    write_dense_fixture(root / "raw", dataset=dataset, seed=0, n_train=64, n_test=32)
    prepare_dense(root / "raw", root / f"{dataset}.h5", dataset=dataset, progress=False)
    return root / f"{dataset}.h5"


@pytest.fixture(scope="session")
def cityscapes_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic CityScapes (MTAN format, 64 train / 32 test scenes at 32×64)."""
    return _prepared_dense(tmp_path_factory, "cityscapes")


@pytest.fixture(scope="session")
def nyuv2_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic NYUv2 (MTAN format, 64 train / 32 test scenes at 32×64)."""
    return _prepared_dense(tmp_path_factory, "nyuv2")
