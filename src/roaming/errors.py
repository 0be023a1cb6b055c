"""Errors a user can act on: each names the file (and line) at fault."""

from __future__ import annotations

from pathlib import Path


class RoamingError(Exception):
    """Base class for errors reported to the user without a traceback."""


class DataError(RoamingError):
    """Input data is missing, malformed or inconsistent."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ConfigError(RoamingError):
    """A command-line argument or configuration value is invalid."""
