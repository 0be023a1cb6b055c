"""environment.yml (conda users) must describe the same environment as pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI ones.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _split(requirement: str) -> tuple[str, str]:
    """('name', 'version spec') of a requirement such as ``torch>=2.2``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return match.group(1).lower(), match.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(_split(r) for r in requirements)


def _environment() -> tuple[dict[str, str], list[str]]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    packages: dict[str, str] = {}
    pip: list[str] = []
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            pip = entry["pip"]
            continue
        name, spec = _split(entry)
        packages[CONDA_TO_PYPI.get(name, name)] = spec
    for entry in pip:
        if not entry.startswith("-"):
            name, spec = _split(entry)
            packages[name] = spec
    return packages, pip


def test_environment_lists_every_dependency_with_the_same_versions():
    packages, _ = _environment()
    expected = _pyproject()
    missing = sorted(set(expected) - set(packages))
    assert not missing, f"environment.yml lacks {missing}"
    for name, spec in expected.items():
        assert packages[name] == spec, (
            f"{name}: pyproject {spec!r}, environment.yml {packages[name]!r}"
        )


def test_environment_installs_roaming_and_its_python():
    packages, pip = _environment()
    assert "-e ." in pip
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert packages["python"] == requires
