"""`eval predict` on a real (tiny, untrained) model: resumable, refuses to mix runs, checks inputs first."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eval.__main__ import main as eval_main
from radreport.cli import run
from radreport.schema import load_examples, write_examples

ROOT = Path(__file__).resolve().parents[2]


def main(argv):
    return run(eval_main, argv)


@pytest.fixture
def data(tmp_path, sample_dir):
    path = tmp_path / "d.json"
    write_examples(path, load_examples(sample_dir / "dev1.json")[:6])
    return path


def predict_argv(model, data, out, *extra):
    return [
        "predict",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--num-beams",
        "1",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "4",
        *extra,
    ]


def test_predict_writes_one_row_per_study_in_data_order(tmp_path, tiny_model_dir, data):
    out = tmp_path / "p.jsonl"
    assert main(predict_argv(tiny_model_dir, data, out, "--dataset", "dev1", "--model-name", "tiny")) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    examples = load_examples(data)
    assert [r["id"] for r in got] == [e.study_id for e in examples]
    assert [r["reference"] for r in got] == [e.impression for e in examples]
    assert {(r["dataset"], r["model"]) for r in got} == {("dev1", "tiny")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "p.jsonl"]  # no partial, no record left


def interrupt_after_first_batch(monkeypatch):
    """The run stops after its first batch as if killed: the real generate runs once, then KeyboardInterrupt."""
    import eval.predict

    real, calls = eval.predict.generate, []

    def generate_once(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(eval.predict, "generate", generate_once)


def test_predict_resumes_an_interrupted_file(tmp_path, tiny_model_dir, data, monkeypatch):
    out = tmp_path / "p.jsonl"
    assert main(predict_argv(tiny_model_dir, data, out)) == 0
    full = out.read_bytes()
    out.unlink()
    with monkeypatch.context() as m:
        interrupt_after_first_batch(m)
        with pytest.raises(KeyboardInterrupt):
            main(predict_argv(tiny_model_dir, data, out))
    partial = tmp_path / "p.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 4 and not out.exists()
    # a torn last line, as a kill during a write leaves it
    partial.write_bytes(partial.read_bytes() + b'{"id": "tor')
    assert main(predict_argv(tiny_model_dir, data, out)) == 0
    assert out.read_bytes() == full
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "p.jsonl"]


def test_resume_in_a_new_process(tmp_path, tiny_model_dir, data, monkeypatch):
    """The record holds nothing that differs between processes (paths resolved, no pids or times of day)."""
    out = tmp_path / "p.jsonl"
    with monkeypatch.context() as m:
        interrupt_after_first_batch(m)
        with pytest.raises(KeyboardInterrupt):
            main(predict_argv(tiny_model_dir, data, out))
    r = subprocess.run(
        [sys.executable, "-m", "eval", *predict_argv(tiny_model_dir, data, out)], cwd=ROOT, capture_output=True
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert len(out.read_text().splitlines()) == 6


@pytest.mark.parametrize(
    "change,what",
    [
        (["--num-beams", "2"], "generation.num_beams: 1 -> 2"),
        (["--dataset", "other"], "dataset: d -> other"),
        (["--model-name", "other"], "model_name: model -> other"),
    ],
)
def test_a_partial_file_of_another_run_is_refused(tmp_path, tiny_model_dir, data, monkeypatch, capsys, change, what):
    out = tmp_path / "p.jsonl"
    with monkeypatch.context() as m:
        interrupt_after_first_batch(m)
        with pytest.raises(KeyboardInterrupt):
            main(predict_argv(tiny_model_dir, data, out))
    partial, record = tmp_path / "p.jsonl.partial", tmp_path / "p.jsonl.partial.json"
    before = (partial.read_bytes(), record.read_bytes())
    capsys.readouterr()
    assert main([*predict_argv(tiny_model_dir, data, out), *change]) == 2
    errors = [line for line in capsys.readouterr().err.split("\n") if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {partial}: was written by another run (")
    assert what in errors[0] and errors[0].endswith("delete it, or use another --out, to predict anew")
    assert (partial.read_bytes(), record.read_bytes()) == before and not out.exists()


def test_a_partial_file_of_other_data_is_refused(tmp_path, tiny_model_dir, data, monkeypatch, capsys):
    out = tmp_path / "p.jsonl"
    with monkeypatch.context() as m:
        interrupt_after_first_batch(m)
        with pytest.raises(KeyboardInterrupt):
            main(predict_argv(tiny_model_dir, data, out))
    rows = json.loads(data.read_text())
    rows[0]["findings"] = "Changed findings."
    data.write_text(json.dumps(rows))
    assert main(predict_argv(tiny_model_dir, data, out)) == 2
    assert "data_sha256: " in capsys.readouterr().err


def test_a_partial_file_without_its_record_is_refused(tmp_path, tiny_model_dir, data, capsys):
    out = tmp_path / "p.jsonl"
    (tmp_path / "p.jsonl.partial").write_text("")
    assert main(predict_argv(tiny_model_dir, data, out)) == 2
    assert "p.jsonl.partial: no readable record of what produced it (p.jsonl.partial.json)" in capsys.readouterr().err


# --- bad input: one line naming the file or flag, exit 2, earlier predictions untouched ----------------------


@pytest.fixture
def earlier(tmp_path):
    """A previous good predictions file at --out: every refusal below must leave it byte-identical."""
    out = tmp_path / "p.jsonl"
    out.write_text('{"earlier": true}\n')
    return out


def refused(capsys, argv, protected, *needles):
    before = protected.read_bytes()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err
    assert protected.read_bytes() == before
    assert not protected.with_name(protected.name + ".partial").exists()
    return err


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
        ("--num-beams", "0", "argument --num-beams: must be >= 1, got 0"),
        ("--max-new-tokens", "-3", "argument --max-new-tokens: must be >= 1, got -3"),
        ("--batch-size", "many", "argument --batch-size: expected an integer >= 1, got 'many'"),
        ("--device", "tpu", "--device: 'tpu' is not one of auto, cpu, cuda, cuda:N"),
        ("--dataset", "x/../../victim", "--dataset: 'x/../../victim' cannot be used in a file name"),
    ],
)
def test_bad_values(capsys, tiny_model_dir, data, earlier, flag, value, message):
    refused(capsys, [*predict_argv(tiny_model_dir, data, earlier), flag, value], earlier, message)


def test_cuda_without_a_gpu(capsys, tiny_model_dir, data, earlier):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    refused(capsys, [*predict_argv(tiny_model_dir, data, earlier), "--device", "cuda"], earlier, "--device: cuda")


def test_out_is_an_existing_directory(capsys, tmp_path, tiny_model_dir, data, earlier):
    (tmp_path / "dir").mkdir()
    refused(
        capsys,
        predict_argv(tiny_model_dir, data, tmp_path / "dir"),
        earlier,
        f"--out: {tmp_path / 'dir'} is an existing directory, expected a file name",
    )


def test_out_under_a_file(capsys, tmp_path, tiny_model_dir, data, earlier):
    refused(
        capsys,
        predict_argv(tiny_model_dir, data, earlier / "p.jsonl"),
        earlier,
        f"--out: {earlier / 'p.jsonl'}: {earlier} is not a directory",
    )


def test_missing_data(capsys, tmp_path, tiny_model_dir, earlier):
    refused(capsys, predict_argv(tiny_model_dir, tmp_path / "nope.json", earlier), earlier, "--data: ", "nope.json")


def test_duplicate_study_ids(capsys, tmp_path, tiny_model_dir, sample_dir, earlier):
    rows = json.loads((sample_dir / "dev1.json").read_text())[:3]
    rows.append(dict(rows[1]))
    data = tmp_path / "dup.json"
    data.write_text(json.dumps(rows))
    sid = rows[1]["study_id"]
    refused(
        capsys,
        predict_argv(tiny_model_dir, data, earlier),
        earlier,
        f"{data}[3]: duplicate study_id '{sid}' (first at {data}[1])",
    )


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    return copy


def test_model_directory_missing(capsys, tmp_path, data, earlier):
    refused(capsys, predict_argv(tmp_path / "nomodel", data, earlier), earlier, "nomodel: model directory not found")


def test_model_without_tokenizer_files(capsys, model_copy, data, earlier):
    for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model"):
        (model_copy / name).unlink(missing_ok=True)
    refused(capsys, predict_argv(model_copy, data, earlier), earlier, f"{model_copy}: no tokenizer files")


def test_model_with_another_models_tokenizer(capsys, model_copy, data, earlier):
    from radreport.modeling import TokenizerSpec, train_tokenizer

    tok = train_tokenizer(["no acute disease", "small left effusion", "mild cardiomegaly"] * 50, TokenizerSpec(100))
    for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model"):
        (model_copy / name).unlink(missing_ok=True)
    tok.save_pretrained(model_copy)
    refused(capsys, predict_argv(model_copy, data, earlier), earlier, f"{model_copy}: the tokenizer has", "tokens")


def test_model_with_a_corrupt_generation_config(capsys, model_copy, data, earlier):
    """transformers read it as no file and decoded with its own defaults (128 new tokens, not the trained 64)."""
    (model_copy / "generation_config.json").write_text("{bad")
    refused(
        capsys, predict_argv(model_copy, data, earlier), earlier, f"{model_copy}/generation_config.json: not valid JSON"
    )


def test_model_with_truncated_weights(capsys, model_copy, data, earlier):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    refused(capsys, predict_argv(model_copy, data, earlier), earlier, f"{model_copy}: the model cannot be loaded")


def test_a_hub_id_that_cannot_be_fetched(capsys, data, earlier, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refused(
        capsys, predict_argv("nobody/no-such-model", data, earlier), earlier, "--model: nobody/no-such-model: not a"
    )


def test_out_naming_the_data_file_is_refused(capsys, tmp_path, tiny_model_dir, data):
    """`--data X.json --out X.json` replaced the dataset with its predictions."""
    message = f"error: --out: {data} would overwrite the --data file"
    refused(capsys, predict_argv(tiny_model_dir, data, data), data, message)
    spelt_otherwise = tmp_path / "sub" / ".." / data.name
    refused(capsys, predict_argv(tiny_model_dir, data, spelt_otherwise), data, "would overwrite the --data file")
    assert not (tmp_path / "sub").exists()


def test_a_partial_file_or_record_naming_the_data_file_is_refused(capsys, tmp_path, tiny_model_dir, data):
    """The record OUT.partial.json is a loadable .json name: it used to be written over the data, then deleted."""
    record_named = tmp_path / "p.jsonl.partial.json"
    record_named.write_bytes(data.read_bytes())
    refused(
        capsys,
        predict_argv(tiny_model_dir, record_named, tmp_path / "p.jsonl"),
        record_named,
        f"--out: {tmp_path / 'p.jsonl'} (its record p.jsonl.partial.json) would overwrite the --data file",
    )
    (tmp_path / "q.jsonl.partial").symlink_to(data)  # the partial file resolves to the data
    refused(
        capsys,
        predict_argv(tiny_model_dir, data, tmp_path / "q.jsonl"),
        data,
        f"--out: {tmp_path / 'q.jsonl'} (its partial file q.jsonl.partial) would overwrite the --data file ({data})",
    )


def test_out_naming_a_file_of_the_model_is_refused(capsys, model_copy, data):
    config = model_copy / "config.json"
    refused(
        capsys,
        predict_argv(model_copy, data, config),
        config,
        f"--out: {config} would overwrite the --model directory's config.json file",
    )
