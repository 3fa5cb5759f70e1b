"""The one failure path of our commands: one line, exit 2, no traceback; argparse types name the flag."""

import argparse

import pytest

from radreport.cli import fraction, port, positive_int, run
from radreport.errors import InputError


def test_input_error_is_one_line_and_exit_2(capsys):
    def main(argv):
        raise InputError("data/x.json:3: field 'findings' is empty")

    assert run(main, []) == 2
    assert capsys.readouterr().err == "error: data/x.json:3: field 'findings' is empty\n"


def test_other_errors_are_not_swallowed():
    def main(argv):
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        run(main, [])


@pytest.mark.parametrize(
    "kind, text, value",
    [(positive_int, "3", 3), (port, "8080", 8080), (fraction, "0.05", 0.05)],
)
def test_types_accept(kind, text, value):
    assert kind(text) == value


@pytest.mark.parametrize(
    "kind, text, needle",
    [
        (positive_int, "0", "must be >= 1"),
        (positive_int, "two", "expected an integer"),
        (port, "70000", "between 1 and 65535"),
        (port, "0", "between 1 and 65535"),
        (fraction, "2", "between 0 and 1"),
        (fraction, "nan", "finite"),
        (fraction, "0", "between 0 and 1"),
    ],
)
def test_types_refuse_with_reason(kind, text, needle):
    with pytest.raises(argparse.ArgumentTypeError, match=needle):
        kind(text)


def test_argparse_names_the_flag(capsys):
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--port", type=port)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--port", "70000"])
    assert e.value.code == 2
    assert "argument --port: must be between 1 and 65535, got 70000" in capsys.readouterr().err
