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

    from radreport.schema import load_examples, write_examples
    from train.local_launch import train_command

    out = tmp_path_factory.mktemp("trained")
    data = out / "train.json"
    write_examples(data, load_examples(SAMPLE / "train.json")[:600])
    command = train_command(
        "configs/train/tiny-cpu.yaml", out / "run", [f"data.train={data}", "epochs=1", "eval.rouge_samples=8"]
    )
    r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "run" / "model"


NOISE_SCALES = (0.15, 0.3, 0.5, 0.8, 1.2)


@pytest.fixture(scope="session")
def varied_model_dir(trained_model_dir, tmp_path_factory) -> Path:
    """The one-epoch tiny model with seeded noise on its weights, saved as a model directory.

    The trained tiny model answers every study alike; batching must be shown not to change answers that end at
    different lengths (padding after a short answer). The noise is the smallest of NOISE_SCALES (relative to
    each weight's spread, seeded) under which greedy answers to the first 40 dev1 findings end at three or more
    lengths, some before the token limit: how much is needed depends on how the model trained."""
    import shutil

    import torch

    from radreport.generation import GenerationParams, generate
    from radreport.modeling import load_model, load_tokenizer, read_meta
    from radreport.schema import load_examples

    tokenizer, meta = load_tokenizer(trained_model_dir), read_meta(trained_model_dir)
    texts = [r.findings for r in load_examples(SAMPLE / "dev1.json")[:40]]
    for scale in NOISE_SCALES:
        model = load_model(trained_model_dir)
        noise = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=noise) * scale * p.std())
        lengths = {
            g.output_tokens
            for g in generate(model, tokenizer, meta, texts, GenerationParams(num_beams=1, max_new_tokens=24))
        }
        if len(lengths) >= 3 and min(lengths) < 24:
            break
    else:
        raise AssertionError(f"no noise scale in {NOISE_SCALES} makes answers end at different lengths")
    out = tmp_path_factory.mktemp("varied") / "model"
    shutil.copytree(trained_model_dir, out)
    model.save_pretrained(out)
    return out
