"""The exceptions CREMA raises for bad input: one clear message naming the file and the problem."""
from __future__ import annotations

import os


class CremaError(Exception):
    """Base class for every error CREMA raises on purpose."""


class ReadError(CremaError, ValueError):
    """A file could not be read as an ECG; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class PreprocessError(CremaError, ValueError):
    """A recording cannot be turned into model input (too short, all leads missing, bad rate)."""


class CheckpointError(CremaError, ValueError):
    """A checkpoint folder is missing files or does not match the code."""
