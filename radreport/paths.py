"""Checks on the paths a command is given, and on names taken from file contents.

Run before any work starts, so a command that would fail on its output path fails at once rather
than after an hour of prediction. A name that comes from inside a file (a split name in a CSV, a
dataset name in a predictions file) becomes part of a path only through `safe_name`: nothing is ever
written outside the output directory the user named.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from radreport.errors import InputError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """A file that must exist and be readable; `what` names the flag or key (e.g. '--data')."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what}: {p} is a directory, expected a file")
    if not p.is_file():
        raise InputError(f"{what}: {p}: file not found")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what}: {p}: not readable")
    return p


def existing_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{what}: {p}: {'not a directory' if p.exists() else 'directory not found'}")
    return p


def _writable_parent(p: Path, what: str) -> None:
    parent = p.parent
    while not parent.exists():  # created on write; check the nearest existing ancestor
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what}: {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what}: {p}: {parent} is not writable")


def output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """A file we will (atomically) write: not a directory, and its directory can be created and written."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what}: {p} is an existing directory, expected a file name")
    _writable_parent(p, what)
    return p


def output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """A directory we will write into: not an existing file, and creatable or writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what}: {p} is an existing file, expected a directory")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{what}: {p} is not writable")
    else:
        _writable_parent(p, what)
    return p


def safe_name(name: str, where: str) -> str:
    """A name read from file contents that will become a file name: letters, digits, '.', '_', '-' only, not
    starting with a dot, so it can never name a parent directory or another place. `where` names its origin."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or name in {".", ".."}:
        raise InputError(
            f"{where}: {name!r} cannot be used in a file name (letters, digits, '.', '_' and '-' only, "
            "not starting with '.' or '-', at most 128 characters)"
        )
    return name


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: equal once resolved (`..`, symlinks), or, both existing, one inode
    (a hard link)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


def not_an_input(output: str | os.PathLike, what: str, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output path that names one of the command's input files: writing it would replace the input
    (with predictions, say) before or while it is read. `inputs`: flag -> path (None: not given)."""
    for flag, path in inputs.items():
        if path is not None and same_file(output, path):
            shown = "" if Path(output) == Path(path) else f" ({path})"
            raise InputError(f"{what} would overwrite the {flag} file{shown}")
