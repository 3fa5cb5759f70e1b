"""Shared fixtures: paths of the bundled sample and of ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests never reach a hub: every model they use is built here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained tiny T5 with its tokenizer learnt from the bundled training split."""
    from radreport.build_tiny import tokenizer_corpus
    from radreport.modeling import build_tiny_t5
    from radreport.schema import load_examples

    corpus = tokenizer_corpus(load_examples(SAMPLE / "train.json"))
    return build_tiny_t5(ROOT / "configs/model/tiny-t5.yaml", corpus, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """The tiny model after one epoch of `python -m train` (1 process, no launcher) on 600 sample rows.

    Serving and evaluation tests need a model whose answers differ by input; the run itself is the
    1-process training test (tests/train/test_loop.py)."""
    import subprocess
    import sys

    from radreport.schema import load_examples, write_examples

    out = tmp_path_factory.mktemp("trained")
    data = out / "train.json"
    write_examples(data, load_examples(SAMPLE / "train.json")[:600])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "--config",
            "configs/train/tiny-cpu.yaml",
            "--output-dir",
            str(out / "run"),
            f"data.train={data}",
            "epochs=1",
            "eval.rouge_samples=8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "run" / "model"
