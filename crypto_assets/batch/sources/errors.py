"""Errors that point at the exact place in a source file."""

from __future__ import annotations

from pathlib import Path


class SourceFormatError(ValueError):
    """A source file cannot be read as any known 1-minute format.

    The message names the file, the line and the field, so the user can open the file at the spot.
    """

    def __init__(self, path: Path | str, line: int, field: str, message: str):
        self.path, self.line, self.field = str(path), line, field
        super().__init__(f"{path}:{line}: {field}: {message}")
