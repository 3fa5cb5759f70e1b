"""Model loading, and the tiny T5 of the embedded default.

A model is named by a local directory or a hub id; nothing is downloaded unless a hub id is named.
A directory we write also carries `radreport.json` (prompt template, token limits), so serving
and evaluation read how the model was trained instead of being told again.
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Le, Lt

from radreport.config import Fraction, NonNegativeInt, PositiveInt, from_dict, load_config, range_problems
from radreport.errors import InputError
from radreport.prompt import DEFAULT_TEMPLATE, check_template

META_FILE = "radreport.json"
# Token limits of a prompt and an impression: training's (data.max_*_tokens) and a model directory's (radreport.json).
SourceTokens = Annotated[int, Ge(8)]
TargetTokens = Annotated[int, Ge(2)]
GENERATION_FILE = "generation_config.json"


@dataclass(frozen=True)
class ModelMeta:
    """What a model directory says about how it expects to be called."""

    prompt_template: str = DEFAULT_TEMPLATE
    max_source_tokens: SourceTokens = 512
    max_target_tokens: TargetTokens = 128
    trained_by: str = ""

    def check(self) -> list[str]:
        errors = range_problems(self)
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
    check_generation_file(d, cfg["vocab_size"])


def check_generation_file(model_dir: Path, vocab_size: int) -> None:
    """The decoding defaults a directory carries (training's `generation:` section), when it has the file.

    transformers reads a broken generation_config.json as none at all and decodes with its built-in defaults
    without a word: a model trained for 64 new tokens would be served and evaluated with 128."""
    from radreport.generation import generation_config_problems

    path = model_dir / GENERATION_FILE
    if not path.is_file():
        return  # transformers derives one from config.json, as for many hub models
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a JSON object")
    problems = generation_config_problems(values) + _special_id_problems(values, vocab_size)
    if problems:
        raise InputError(f"{path}: {'; '.join(problems)}")


SPECIAL_IDS = ("decoder_start_token_id", "eos_token_id", "pad_token_id")


def _special_id_problems(values: dict, rows: int) -> list[str]:
    """generate() takes the special ids from this file alone: without decoder_start_token_id it cannot start a
    sequence, and an id past the embedding (`rows`) fails in the middle of a batch."""
    problems = [] if "decoder_start_token_id" in values else ["decoder_start_token_id: missing (T5: 0, the pad id)"]
    for key in SPECIAL_IDS:
        ids = values.get(key)
        for i in ids if isinstance(ids, list) else [ids]:
            if i is None:
                continue
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < rows:
                problems.append(f"{key}: {json.dumps(i)} is not a token id of this model ({rows} embedding rows)")
    return problems


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
    """A seq2seq model from a directory or hub id, in eval mode, with its checkpoint's own head tying.
    A local directory that is truncated or corrupt is refused as InputError naming it (a hub download
    failure is left as it is)."""
    from transformers import AutoModelForSeq2SeqLM

    check_model_dir(name)
    local = _local_only(name)
    try:
        if local:
            model = load_seq2seq(name, dtype or torch.float32)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(str(name), dtype=dtype or torch.float32)
    except HeadTyingError:
        raise
    except Exception as e:  # noqa: BLE001  safetensors, torch and transformers each raise their own
        if not local:
            raise
        raise InputError(f"{name}: the model cannot be loaded ({type(e).__name__}: {str(e)[:300]})") from None
    return model.to(device).eval()


# ---- the output head: tied to the input embedding, or a matrix of its own ------------------
#
# T5 v1.0 ties its output layer (lm_head) to the input embedding (`shared`); T5 v1.1 and flan-t5 train a
# separate one (their config.json says tie_word_embeddings: false). transformers 5 forces
# T5Config.tie_word_embeddings=True (the saved flag only selects decoder-output scaling) and, while loading,
# keeps lm_head apart only if the stored lm_head differs in value from `shared`. Under DeepSpeed ZeRO-3
# (`from_pretrained` inside zero.Init) both are empty partitions when that comparison runs, so they compare
# equal and the pretrained head is silently replaced by the embedding. So the checkpoint's own files decide:
# if they store an lm_head that differs from `shared`, the model is built from a T5 class whose tied-weights
# map leaves lm_head out (transformers' own mechanism for what a class ties), and after loading
# `check_output_head` proves the result (on gathered ZeRO-3 parameters where needed).

HEAD_KEY, EMBEDDING_KEY = "lm_head.weight", "shared.weight"


class HeadTyingError(RuntimeError):
    """A loaded model's output head is not what its checkpoint stores."""


def _stored_tensors(model_dir: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Read just `names` from a model directory's weight files (safetensors lazily; .bin memory-mapped)."""
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in set(names) & set(st.keys()):
                found[name] = st.get_tensor(name)
    if not found and not any(model_dir.glob("*.safetensors")):
        for f in sorted(model_dir.glob("pytorch_model*.bin")):
            sd = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
            found.update({n: sd[n].clone() for n in names if n in sd})
    return found


def own_output_head(model_dir: str | os.PathLike) -> torch.Tensor | None:
    """The checkpoint's lm_head when it is a matrix of its own; None when the head is tied to `shared`.

    A head stored under its own name and equal to `shared` counts as tied (a .bin checkpoint stores both names
    for one tensor), as transformers itself decides when it can see the values."""
    stored = _stored_tensors(Path(model_dir), (HEAD_KEY, EMBEDDING_KEY))
    head, embedding = stored.get(HEAD_KEY), stored.get(EMBEDDING_KEY)
    if head is None:
        return None
    if embedding is not None and head.shape == embedding.shape and torch.equal(head, embedding):
        return None
    return head


@functools.cache
def _untied_t5_class():
    """T5ForConditionalGeneration whose lm_head is not in the tied-weights map (the encoder and decoder
    embeddings still share `shared`). Its class name stays T5ForConditionalGeneration, so the saved
    config.json names the standard class and every loader reads the directory as a plain T5."""
    from transformers import T5ForConditionalGeneration

    tied = {k: v for k, v in T5ForConditionalGeneration._tied_weights_keys.items() if k != HEAD_KEY}
    return type(
        "T5ForConditionalGeneration",
        (T5ForConditionalGeneration,),
        {"_tied_weights_keys": tied, "__doc__": _untied_t5_class.__doc__, "__module__": __name__},
    )


def load_seq2seq(model_dir: str | os.PathLike, dtype: torch.dtype, gather=None):
    """`from_pretrained` that keeps the checkpoint's head tying under every ZeRO stage, then checks it.

    `gather(params)`: a context manager that makes partitioned parameters whole on every rank (DeepSpeed's
    zero.GatheredParameters under ZeRO-3); every rank must call this function together then."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    head = own_output_head(model_dir) if config.model_type == "t5" else None
    cls = _untied_t5_class() if head is not None else AutoModelForSeq2SeqLM
    model = cls.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype)
    if config.model_type == "t5":
        check_output_head(model, head, gather, where=str(model_dir))
    return model


def check_output_head(model, stored_head: torch.Tensor | None, gather=None, where: str = "model") -> None:
    """Fail loudly unless lm_head is tied to `shared` exactly when the checkpoint has no head of its own, the
    encoder and decoder embeddings are `shared`, and an own head holds the stored values."""
    shared, head = model.shared.weight, model.lm_head.weight
    for stack in (model.encoder, model.decoder):
        if stack.embed_tokens.weight is not shared:
            raise HeadTyingError(f"{where}: the {stack.__class__.__name__} embedding is not tied to `shared`")
    if stored_head is None:
        if head is not shared:
            raise HeadTyingError(f"{where}: the checkpoint ties lm_head to `shared`, the loaded model does not")
        return
    if head is shared:
        raise HeadTyingError(
            f"{where}: the checkpoint has its own lm_head, but the loaded model ties it to `shared` "
            "(the pretrained head would be lost)"
        )
    with gather([head]) if gather is not None else nullcontext():
        same = head.shape == stored_head.shape and torch.equal(head.detach().cpu(), stored_head.to(head.dtype))
    if not same:
        raise HeadTyingError(f"{where}: the loaded lm_head differs from the one stored in the checkpoint")


def count_parameters(model) -> int:
    """Distinct parameters (a tied matrix once); under ZeRO-3 the full sizes, not this rank's partitions."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


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

    vocab_size: Annotated[int, Ge(100)] = 2000
    character_coverage: Annotated[float, Ge(0.98), Le(1)] = 1.0
    """Share of the corpus's characters the vocabulary covers (SentencePiece's unigram trainer takes 0.98-1)."""
    extra_ids: Annotated[int, Ge(0), Le(1000)] = 0
    """T5's <extra_id_N> sentinel tokens (flan-t5 has 100; fine-tuning on impressions uses none)."""


@dataclass(frozen=True)
class T5Spec:
    """The T5Config fields a tiny model sets (vocab_size and the special ids come from its tokenizer).

    `T5Config(**spec)` takes it as keyword arguments."""

    d_model: PositiveInt = 128
    """Width of the residual stream and of the embeddings."""
    d_ff: PositiveInt = 256
    """Width of the feed-forward layer."""
    d_kv: PositiveInt = 32
    """Width of each attention head."""
    num_heads: PositiveInt = 4
    num_layers: PositiveInt = 2
    """Encoder blocks."""
    num_decoder_layers: PositiveInt = 2
    """Decoder blocks."""
    feed_forward_proj: Literal["relu", "gelu", "gated-relu", "gated-gelu"] = "gated-gelu"
    """relu: T5 v1.0; gated-gelu: T5 v1.1 and flan-t5."""
    tie_word_embeddings: bool = False
    """false: lm_head is a matrix of its own, like flan-t5 (and no decoder-output scaling); true: T5 v1.0."""
    dropout_rate: Fraction = 0.1
    relative_attention_num_buckets: Annotated[int, Ge(2)] = 32
    relative_attention_max_distance: int = 128
    """Relative positions beyond this many tokens share the last bucket."""
    layer_norm_epsilon: Annotated[float, Gt(0), Lt(1)] = 1e-6

    def check(self) -> list[str]:
        errors = range_problems(self)
        if self.relative_attention_max_distance < self.relative_attention_num_buckets:
            errors.append("relative_attention_max_distance: must be >= relative_attention_num_buckets")
        return errors

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str):
        return getattr(self, key)


@dataclass(frozen=True)
class TinyModelSpec:
    """configs/model/tiny-t5.yaml: a T5Config plus how to train its tokenizer."""

    t5: T5Spec = field(default_factory=T5Spec)
    """The architecture; every key is checked (a misspelt one is an error, not ignored)."""
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    seed: NonNegativeInt = 0
    """Seeds the random initialisation, so a spec and a corpus always give the same model."""


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


def initial_generation_config(config):
    """The generation_config.json of a freshly built model: T5's special ids from its config, beam search 4.
    Training overwrites the decoding part with its `generation:` section when it exports."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        num_beams=4,
        max_new_tokens=64,
    )


def build_tiny_t5(
    spec_path: str | os.PathLike, texts: Iterable[str], out_dir: str | os.PathLike, meta: ModelMeta | None = None
) -> Path:
    """Train the tokenizer on `texts`, initialise a T5 from the spec, save a HF model directory."""
    from transformers import T5Config, T5ForConditionalGeneration

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
    if spec.t5.tie_word_embeddings:
        model = T5ForConditionalGeneration(config)
    else:  # lm_head a matrix of its own, as in flan-t5; sized for unit-variance logits at the start
        model = _untied_t5_class()(config)
        torch.nn.init.normal_(model.lm_head.weight, std=spec.t5.d_model**-0.5)
    model.generation_config = initial_generation_config(config)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.building")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_meta(tmp, meta or ModelMeta(trained_by="radreport.modeling.build_tiny_t5 (untrained)"))
    if (own_output_head(tmp) is None) != spec.t5.tie_word_embeddings:  # the files must say what the spec says
        raise HeadTyingError(f"{tmp}: saved head tying differs from t5.tie_word_embeddings in {spec_path}")
    replace_dir(tmp, out_dir)
    return out_dir


def describe(model: Any) -> str:
    n = count_parameters(model)
    return f"{type(model).__name__} with {n / 1e6:.2f}M parameters"
