"""Path checks run before work starts; names from file contents never leave the output directory."""

import os

import pytest

from radreport.errors import InputError
from radreport.paths import existing_file, output_dir, output_file, safe_name


@pytest.mark.parametrize("name", ["dev2", "mimic-train_v1.2", "A"])
def test_safe_names_pass(name):
    assert safe_name(name, "f.csv:2: split") == name


@pytest.mark.parametrize("name", ["../victim", "x/../../victim", "/etc/passwd", ".", "..", ".hidden", "", "a b", "-x"])
def test_names_that_could_leave_the_directory_are_refused(name):
    with pytest.raises(InputError, match=r"f.csv:2: split: .* cannot be used in a file name"):
        safe_name(name, "f.csv:2: split")


def test_output_file_refuses_a_directory_and_an_unwritable_parent(tmp_path):
    with pytest.raises(InputError, match=r"--out: .* is an existing directory"):
        output_file(tmp_path)
    assert output_file(tmp_path / "new" / "deeper" / "p.jsonl") == tmp_path / "new" / "deeper" / "p.jsonl"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        output_file(tmp_path / "file" / "p.jsonl")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="not writable"):
            output_file(locked / "p.jsonl")


def test_output_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"--report: .* is an existing file, expected a directory"):
        output_dir(tmp_path / "f", "--report")
    assert output_dir(tmp_path / "d") == tmp_path / "d"


def test_existing_file(tmp_path):
    with pytest.raises(InputError, match=r"--data: .*nope.json: file not found"):
        existing_file(tmp_path / "nope.json", "--data")
    with pytest.raises(InputError, match="is a directory"):
        existing_file(tmp_path, "--data")
