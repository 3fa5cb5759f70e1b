"""Model loading, and the tiny T5 of the embedded default.

A model is named by a local directory or a hub id; nothing is downloaded unless a hub id is named.
A directory we write also carries `radreport.json` (prompt template, token limits), so serving
and evaluation read how the model was trained instead of being told again.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from radreport.config import from_dict, load_config
from radreport.errors import InputError
from radreport.prompt import DEFAULT_TEMPLATE, check_template

META_FILE = "radreport.json"


@dataclass(frozen=True)
class ModelMeta:
    """What a model directory says about how it expects to be called."""

    prompt_template: str = DEFAULT_TEMPLATE
    max_source_tokens: int = 512
    max_target_tokens: int = 128
    trained_by: str = ""

    def check(self) -> list[str]:
        errors = []
        try:
            check_template(self.prompt_template)
        except ValueError as e:
            errors.append(f"prompt_template: {e}")
        return errors


def read_meta(model: str | os.PathLike) -> ModelMeta:
    """The model directory's radreport.json (defaults for a directory we did not write, e.g. a hub model)."""
    path = Path(model) / META_FILE
    if not path.is_file():
        return ModelMeta()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    known = {k: v for k, v in data.items() if k in ModelMeta.__dataclass_fields__}
    return from_dict(ModelMeta, known, str(path))


# A tokenizer is saved either as the fast tokenizer's tokenizer.json or as a SentencePiece model.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def check_model_dir(model: str | os.PathLike) -> None:
    """Refuse a local model directory that cannot give a working model, before anything loads it.

    transformers is lenient where we must not be: without tokenizer files it builds an empty tokenizer,
    and a service comes up ready on it. A hub id (not a local directory) is left to transformers.
    """
    d = Path(model)
    if not d.exists() and (str(model).startswith((".", "/", "~")) or len(d.parts) > 2):
        raise InputError(f"{model}: model directory not found")
    if not d.is_dir():
        if d.exists():
            raise InputError(f"{model}: not a model directory")
        return  # `owner/name` or `name`: a hub id
    config = d / "config.json"
    if not config.is_file():
        raise InputError(f"{d}: no config.json (not a model directory, or an unfinished copy)")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{config}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("vocab_size"), int):
        raise InputError(f"{config}: no vocab_size (not a seq2seq model config)")
    if not any(any(d.glob(p)) for p in WEIGHT_PATTERNS):
        raise InputError(f"{d}: no weights (*.safetensors or pytorch_model*.bin)")
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(
            f"{d}: no tokenizer files ({' or '.join(TOKENIZER_FILES)}); copy the tokenizer saved "
            "with the model into this directory"
        )
    read_meta(d)


def check_tokenizer_fits(tokenizer, config, where: str) -> None:
    """The tokenizer must be the model's: its ids inside the embedding, its special tokens the model's own.

    T5 checkpoints pad the embedding past the vocabulary (flan-t5: 32,100 tokens, 32,128 rows), so a smaller
    tokenizer is fine; one of under 90% of the rows is another model's (or an empty one)."""
    n, rows = len(tokenizer), config.vocab_size
    if n > rows:
        raise InputError(f"{where}: the tokenizer has {n} tokens but the model only {rows} embedding rows")
    if n < 0.9 * rows:
        raise InputError(f"{where}: the tokenizer has {n} tokens for a model of {rows}: not this model's tokenizer")
    for name in ("pad_token_id", "eos_token_id"):
        want = getattr(config, name, None)
        got = getattr(tokenizer, name, None)
        if want is not None and got != want:
            raise InputError(f"{where}: tokenizer {name} is {got}, the model's is {want}: not this model's tokenizer")


def write_meta(model_dir: str | os.PathLike, meta: ModelMeta) -> None:
    from radreport.io import atomic_write_json

    atomic_write_json(Path(model_dir) / META_FILE, asdict(meta))


def _local_only(name: str | os.PathLike) -> bool:
    return Path(name).is_dir()


def load_tokenizer(name: str | os.PathLike):
    """The tokenizer of a model directory or hub id, checked against the model's config."""
    from transformers import AutoConfig, AutoTokenizer

    check_model_dir(name)
    local = _local_only(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name), local_files_only=local)
        config = AutoConfig.from_pretrained(str(name), local_files_only=local)
    except (OSError, ValueError) as e:
        if not local:
            raise
        raise InputError(f"{name}: the tokenizer cannot be loaded ({type(e).__name__}: {str(e)[:300]})") from None
    check_tokenizer_fits(tokenizer, config, str(name))
    return tokenizer


def load_model(name: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """A seq2seq model from a directory or hub id, in eval mode. A local directory that is truncated or
    corrupt is refused as InputError naming it (a hub download failure is left as it is)."""
    from transformers import AutoModelForSeq2SeqLM

    check_model_dir(name)
    local = _local_only(name)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(name), local_files_only=local, dtype=dtype or torch.float32)
    except Exception as e:  # noqa: BLE001  safetensors, torch and transformers each raise their own
        if not local:
            raise
        raise InputError(f"{name}: the model cannot be loaded ({type(e).__name__}: {str(e)[:300]})") from None
    return model.to(device).eval()


def resolve_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    """bf16 on a GPU that has it (the A10G does), fp32 otherwise: T5 overflows in fp16."""
    if requested == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]


# ---- the tiny T5 of the embedded default ---------------------------------------------------


@dataclass(frozen=True)
class TokenizerSpec:
    """SentencePiece unigram training settings."""

    vocab_size: int = 2000
    character_coverage: float = 1.0
    extra_ids: int = 0

    def check(self) -> list[str]:
        return [] if self.vocab_size >= 100 else ["vocab_size: must be at least 100"]


@dataclass(frozen=True)
class TinyModelSpec:
    """configs/model/tiny-t5.yaml: a T5Config plus how to train its tokenizer."""

    t5: dict = field(default_factory=dict)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    seed: int = 0


def train_tokenizer(texts: Iterable[str], spec: TokenizerSpec):
    """A T5 tokenizer whose unigram vocabulary is learnt from `texts`.

    SentencePiece learns the (piece, score) list; transformers 5 builds T5Tokenizer from that list.
    Ids follow T5: <pad>=0, </s>=1, <unk>=2. Identity normalisation keeps case and punctuation.
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=buf,
        vocab_size=spec.vocab_size,
        model_type="unigram",
        character_coverage=spec.character_coverage,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        normalization_rule_name="identity",
        hard_vocab_limit=False,
        num_threads=1,  # deterministic
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=spec.extra_ids)


def build_tiny_t5(
    spec_path: str | os.PathLike, texts: Iterable[str], out_dir: str | os.PathLike, meta: ModelMeta | None = None
) -> Path:
    """Train the tokenizer on `texts`, initialise a T5 from the spec, save a HF model directory."""
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    from radreport.io import replace_dir

    spec = load_config(TinyModelSpec, spec_path)
    tokenizer = train_tokenizer(texts, spec.tokenizer)
    config = T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **spec.t5,
    )
    torch.manual_seed(spec.seed)
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_beams=4,
        max_new_tokens=64,
    )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.building")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_meta(tmp, meta or ModelMeta(trained_by="radreport.modeling.build_tiny_t5 (untrained)"))
    replace_dir(tmp, out_dir)
    return out_dir


def describe(model: Any) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} with {n / 1e6:.2f}M parameters"
