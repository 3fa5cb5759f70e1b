"""The one way our commands fail on bad input: `error: <where>: <what>` on stderr, exit status 2.

Every `python -m ...` entry point runs its `main` through `run`, and its argparse values through the
types below, so a bad value is refused with the flag's name before anything is read or written.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radreport.errors import EXIT_BAD_INPUT, InputError


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call `main(argv)`; an InputError becomes one line on stderr and exit status 2 (no traceback)."""
    try:
        return main(argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _at_least(kind: type, low: int, what: str) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` that is >= low."""

    def parse(text: str):
        value = _number(text, kind, what)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__doc__ = f"argparse type: {what}."
    return parse


positive_int = _at_least(int, 1, "an integer >= 1")
non_negative_int = _at_least(int, 0, "an integer >= 0 (0: the default)")
non_negative_float = _at_least(float, 0, "a number >= 0 (0: the default)")


def path_arg(text: str) -> Path:
    """argparse type: a path that is not empty (Path("") would quietly mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def port(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    value = _number(text, int, "a port number")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = _number(text, float, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value
