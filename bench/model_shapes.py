"""Random-weight T5 models with the exact shapes of real flan-t5 sizes, built here (the hub is unreachable).

Shared by bench/scale_rehearsal.py and bench/gpu_check.py. A shape's architecture comes from
configs/model/flan-t5-NAME.config.json (`tiny`: configs/model/tiny-t5.yaml's layers with flan-t5's vocabulary).
Like flan-t5, the LM head is untied: its own matrix, initialised as T5 initialises an untied head.

The tokenizer is a SentencePiece unigram model learnt from the bundled sample (as radreport/modeling.py does for
the tiny model), filled up with pieces that never occur to 32,000, plus T5's 100 sentinel tokens: 32,100
tokens in 32,128 embedding rows, exactly flan-t5's layout. The learnt part is small (the synthetic sample has a
small vocabulary), so sequences are longer than T5's own tokenizer would make them: ~2.7 tokens per word.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("tiny", "small", "base", "large", "xl")
T5_PIECES = 32000  # SentencePiece pieces of T5's tokenizer, before the 100 <extra_id_N> sentinels
T5_EXTRA_IDS = 100


def shape_config(name: str) -> dict:
    """The config.json dict of a shape."""
    if name == "tiny":
        from radreport.config import load_config
        from radreport.modeling import TinyModelSpec

        base = shape_config("small")
        spec = load_config(TinyModelSpec, ROOT / "configs/model/tiny-t5.yaml")
        return {**base, **spec.t5, "tie_word_embeddings": False}
    path = ROOT / "configs/model" / f"flan-t5-{name}.config.json"
    if not path.is_file():
        raise ValueError(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def flan_layout_tokenizer(texts: list[str]):
    """A T5 tokenizer learnt from `texts`, laid out like flan-t5's (32,000 pieces + 100 sentinels)."""
    from transformers import T5Tokenizer

    from radreport.modeling import TokenizerSpec, train_tokenizer

    learnt = train_tokenizer(texts, TokenizerSpec(vocab_size=T5_PIECES))
    pieces = [tuple(p) for p in json.loads(learnt.backend_tokenizer.to_str())["model"]["vocab"]]
    # Fillers never match real text (no radiology report holds "<unused_7>"); the lowest score keeps them out
    # of every segmentation that has another choice.
    filler = [(f"<unused_{i}>", -1e4) for i in range(T5_PIECES - len(pieces))]
    return T5Tokenizer(vocab=pieces + filler, extra_ids=T5_EXTRA_IDS)


def sample_texts() -> list[str]:
    from radreport.build_tiny import tokenizer_corpus
    from radreport.schema import load_examples

    return tokenizer_corpus(load_examples(ROOT / "data/sample/train.json"))


def build_model(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A randomly initialised T5ForConditionalGeneration of shape `name`, lm_head untied, in train mode."""
    from transformers import T5Config, T5ForConditionalGeneration

    from radreport.modeling import initial_generation_config

    config = T5Config(**shape_config(name))
    torch.manual_seed(seed)
    with torch.device(device):
        model = T5ForConditionalGeneration(config)
        # transformers' T5Config always says tied; untie only the head (the two embed_tokens stay `shared`)
        head = torch.empty_like(model.shared.weight).normal_(mean=0.0, std=config.initializer_factor)
        model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False
    model.generation_config = initial_generation_config(config)
    return model.to(dtype)


def build_model_dir(name: str, out_dir: Path, max_source: int = 512, max_target: int = 128, seed: int = 0) -> Path:
    """A Hugging Face model directory (fp32 safetensors, tokenizer, radreport.json) of shape `name`."""
    from radreport.io import replace_dir
    from radreport.modeling import ModelMeta, check_tokenizer_fits, write_meta

    tokenizer = flan_layout_tokenizer(sample_texts())
    model = build_model(name, seed=seed)
    check_tokenizer_fits(tokenizer, model.config, f"shape {name}")
    tmp = out_dir.with_name(f".{out_dir.name}.building")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_meta(tmp, ModelMeta("instruction", max_source, max_target, trained_by=f"bench/model_shapes.py {name}"))
    replace_dir(tmp, out_dir)
    return out_dir


def head_report(model_dir: Path) -> dict:
    """Whether a saved model has its own lm_head, and whether it differs from the shared embedding."""
    from safetensors import safe_open

    tensors = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in ("lm_head.weight", "shared.weight"):
                if key in st.keys():
                    tensors[key] = st.get_tensor(key)
    has_head = "lm_head.weight" in tensors
    differs = (
        has_head and "shared.weight" in tensors and not torch.equal(tensors["lm_head.weight"], tensors["shared.weight"])
    )
    return {"lm_head_saved": has_head, "lm_head_differs_from_shared": bool(differs)}


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description="Build a random-weight model directory of a flan-t5 shape.")
    p.add_argument("shape", choices=SHAPES)
    p.add_argument("out_dir", type=Path)
    a = p.parse_args()
    print(build_model_dir(a.shape, a.out_dir))
