"""The one error a user sees for a bad suite: ``file:line: key.path: message``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SuiteError(Exception):
    """A problem in a suite file or its dataset, located to a line and a key path.

    pytest shows it as a collection error of one line, without a traceback.
    """

    def __init__(self, file: str, line: int, key_path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key_path = key_path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return (
            f"{where}: {self.key_path}: {self.message}"
            if self.key_path
            else (f"{where}: {self.message}")
        )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
