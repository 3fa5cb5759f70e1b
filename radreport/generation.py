"""The one generation helper: offline prediction and the service both call `generate`.

It renders the prompt the model directory was trained with, tokenises with its limits, decodes (greedy,
beam search or sampling, as `GenerationParams` say) and returns the candidates best first with their
scores, so offline and online numbers cannot diverge.

Every answer depends only on its own request, never on what else is in the batch:
- the score of a candidate is computed the same way for every search: the model's own log-probability
  of the tokens it returns, up to and including the first </s> (never the padding after it), divided
  by length**length_penalty. For beam search that is the score the beams were ranked by;
- seeded sampling runs each request by itself under its own seed (the random stream of a batched
  draw would depend on the batch's other rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Le

from radreport.config import NonNegativeInt, range_problems
from radreport.modeling import ModelMeta
from radreport.prompt import render

# Scoring materialises log-probabilities of (sequences x tokens x vocabulary) at once; this many
# elements at most (256 MB in fp32), the rest in further chunks.
SCORE_CHUNK_ELEMENTS = 2**26
SAMPLING_ONLY = ("top_k", "top_p", "temperature", "seed")
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
# The ranges of the contract's numbers, shared with the service's request schema (serve/schemas.py).
TopP = Annotated[float, Gt(0), Le(1)]
LengthPenalty = Annotated[float, Ge(-5), Le(5)]  # an exponent of the length: beyond it, scores overflow
# Far beyond any use (a server's own limits are lower); they stop numbers that overflow the libraries' int64.
Beams = Annotated[int, Ge(1), Le(1024)]
NewTokens = Annotated[int, Ge(1), Le(65536)]
Temperature = Annotated[float, Ge(MIN_TEMPERATURE), Le(MAX_TEMPERATURE)]  # below: logits / t overflow to inf
Seed = Annotated[int, Ge(0), Le(2**63 - 1)]


@dataclass(frozen=True)
class GenerationParams:
    """How an impression is decoded: the one contract of training, evaluation and serving.

    Training writes these into the exported model's generation_config.json (the `generation:` section of a
    train config); `eval predict` and the service read them back from there as defaults and override them per
    call. Server limits (how many beams a request may ask for) live in the serve config, not here.
    """

    num_beams: Beams = 4
    """Beam width; 1 is greedy search (or plain sampling with do_sample)."""
    max_new_tokens: NewTokens = 128
    """Tokens generated at most, the closing </s> included."""
    num_return_sequences: Beams = 1
    """Candidates returned, best first; at most num_beams, except for sampling with num_beams 1 (independent draws)."""
    length_penalty: LengthPenalty = 1.0
    """Scores are sum(log p) / length**length_penalty, for every search; > 1 favours longer impressions."""
    no_repeat_ngram_size: NonNegativeInt = 0
    """Forbid repeating any n-gram of this size (0: off)."""
    early_stopping: bool = True
    """Beam search stops once num_beams finished candidates exist. Greedy search and sampling stop each
    sequence at its </s> either way, so there it changes nothing."""
    do_sample: bool = False
    """Sample the next token instead of taking the most likely one (with num_beams > 1: beam sampling)."""
    top_k: NonNegativeInt = 50
    """Sampling: keep the k most likely tokens (0: all). Only with do_sample."""
    top_p: TopP = 1.0
    """Sampling: keep the smallest set of tokens whose probability reaches top_p (1: all). Only with do_sample."""
    temperature: Temperature = 1.0
    """Sampling: divide the logits by this (< 1 sharper). Only with do_sample; scores stay the model's own."""
    seed: Seed | None = None
    """Sampling: seed of this request's own random stream; the same seed gives the same answer, alone or in a
    batch. None: a fresh draw each call. Only with do_sample."""

    def check(self) -> list[str]:
        """Every problem, each naming its field; a value that would be silently ignored is one."""
        errors = range_problems(self)
        in_range = not {e.split(":")[0] for e in errors} & {"num_beams", "num_return_sequences"}  # else one line each
        if in_range and self.num_beams < self.num_return_sequences and not (self.do_sample and self.num_beams == 1):
            errors.append("num_return_sequences: must not exceed num_beams (except for sampling with num_beams 1)")
        if not self.do_sample:
            default = GenerationParams()
            for name in SAMPLING_ONLY:
                if getattr(self, name) != getattr(default, name):
                    errors.append(f"{name}: only used when sampling; set do_sample to true or leave {name} out")
        return errors

    def sequences_per_request(self) -> int:
        """Decoder sequences one request holds in memory while it runs: its beams, or its independent samples."""
        return max(self.num_beams, self.num_return_sequences)

    def write_into(self, generation_config) -> None:
        """Set these values on a transformers GenerationConfig (saved as the model's generation_config.json).

        Only the values this search uses; the others are unset (None), also where the config held them before:
        transformers refuses to save a config carrying e.g. a temperature without sampling, and
        `params_from_model` reads an unset value back as our default."""
        used = self.used()
        for f in fields(self):
            if f.name in used:
                setattr(generation_config, f.name, used[f.name])
            elif getattr(generation_config, f.name, None) is not None:
                setattr(generation_config, f.name, None)

    def used(self) -> dict:
        """The fields this search uses, by name."""
        skip = set()
        if not self.do_sample:
            skip.update(SAMPLING_ONLY)
        elif self.seed is None:
            skip.add("seed")
        if self.num_beams == 1:
            skip.add("early_stopping")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass
class Generated:
    candidates: list[tuple[str, float]]  # best first: (text, length-normalised log-probability), scores descending
    input_tokens: int
    output_tokens: int
    truncated: bool


def params_from_model(model, **overrides) -> GenerationParams:
    """Defaults from the model directory's generation_config.json, then explicit (non-None) values."""
    return params_from_config(model.generation_config, **overrides)


def params_from_config(g, **overrides) -> GenerationParams:
    """Defaults from a transformers GenerationConfig, then explicit (non-None) values."""
    default = GenerationParams()
    base = {}
    for f in fields(GenerationParams):
        value = getattr(g, f.name, None)
        want = getattr(default, f.name)
        base[f.name] = want if value is None or want is None else type(want)(value)
    if getattr(g, "seed", None) is not None:
        base["seed"] = int(g.seed)
    base["num_beams"] = base["num_beams"] or 1
    base["max_new_tokens"] = base["max_new_tokens"] or default.max_new_tokens
    given = {k: v for k, v in overrides.items() if v is not None}
    base.update(given)
    if not base["do_sample"]:  # sampling values the model's defaults carry do not outlive sampling
        base.update({k: getattr(default, k) for k in SAMPLING_ONLY if k not in given})
    return GenerationParams(**base)


def _json_kind(want: object) -> tuple[tuple[type, ...], str]:
    """The JSON values a GenerationParams field takes (by its default's type): accepted types, and their name."""
    if isinstance(want, bool):
        return (bool,), "true or false"
    if isinstance(want, float):
        return (int, float), "a number"
    return (int,), "an integer"


def generation_config_problems(values: dict) -> list[str]:
    """What is wrong with the decoding values of a model directory's generation_config.json, each naming its
    key; [] when `params_from_config` reads them as they say.

    transformers is lenient where we must not be: it keeps `"num_beams": "4"` or `2.5` as given (which
    params_from_config would turn into something else), and when its loader cannot read the file at all it
    falls back to built-in defaults without a word (128 new tokens where training said 64)."""
    from transformers import GenerationConfig

    problems = []
    for f in fields(GenerationParams):
        value = values.get(f.name)
        if value is None:
            continue
        types, name = _json_kind(f.default if f.default is not None else 0)
        if isinstance(value, bool) != (types == (bool,)) or not isinstance(value, types):
            problems.append(f"{f.name}: expected {name}, got {json.dumps(value)}")
    if problems:
        return problems
    try:
        g = GenerationConfig(**values)  # its own checks, e.g. max_new_tokens > 0
    except (TypeError, ValueError) as e:
        return [str(e).strip().splitlines()[0]]
    params = params_from_config(g)
    if values.get("num_beams") == 0:  # read as 1 (transformers' unset value); written, it is a mistake
        params = replace(params, num_beams=0)
    return params.check()


def encode(
    tokenizer, meta: ModelMeta, findings: list[str], backgrounds: list[str]
) -> tuple[list[list[int]], list[int]]:
    """Token ids of the rendered prompts, cut to the model's max_source_tokens keeping the closing </s>
    (as truncation=True does), and the full lengths, which say whether an input was cut."""
    prompts = [render(f, meta.prompt_template, b) for f, b in zip(findings, backgrounds, strict=True)]
    full = tokenizer(prompts)["input_ids"]
    limit = meta.max_source_tokens
    cut = [ids if len(ids) <= limit else ids[: limit - 1] + [tokenizer.eos_token_id] for ids in full]
    return cut, [len(ids) for ids in full]


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    meta: ModelMeta,
    findings: list[str],
    params: GenerationParams,
    backgrounds: list[str] | None = None,
) -> list[Generated]:
    """Decode one batch; every request in it shares `params`. One Generated per finding, in order."""
    backgrounds = backgrounds or [""] * len(findings)
    ids, full_lengths = encode(tokenizer, meta, findings, backgrounds)
    enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding_side="right")  # row i: its first len(ids[i])
    input_ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
    # The encoder runs once: generation and scoring both read its output.
    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state
    config = _generation_config(model, params)
    r = params.num_return_sequences
    if params.do_sample and params.seed is not None:
        # One request at a time under its own seed, with its own (unpadded) length: batch-independent.
        seqs = []
        for i, n in enumerate(len(x) for x in ids):
            with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
                torch.manual_seed(params.seed)
                seqs.append(_decode(model, hidden[i : i + 1, :n], mask[i : i + 1, :n], config))
        width = max(s.shape[1] for s in seqs)
        sequences = torch.cat(
            [torch.nn.functional.pad(s, (0, width - s.shape[1]), value=config.pad_token_id) for s in seqs]
        )
    else:
        sequences = _decode(model, hidden, mask, config)
    row_of = torch.arange(len(ids), device=model.device).repeat_interleave(r)
    scores, lengths = sequence_scores(
        model, hidden, mask, row_of, sequences, config.eos_token_id, params.length_penalty
    )
    texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
    results = []
    for i in range(len(ids)):
        rows = sorted(range(i * r, (i + 1) * r), key=lambda j: -scores[j])  # best first; stable on ties
        results.append(
            Generated(
                [(texts[j].strip(), scores[j]) for j in rows],
                input_tokens=len(ids[i]),
                output_tokens=lengths[rows[0]],
                truncated=full_lengths[i] > meta.max_source_tokens,
            )
        )
    return results


def _generation_config(model, params: GenerationParams):
    """A GenerationConfig of our params and the model's special tokens, for this call."""
    from transformers import GenerationConfig

    g = model.generation_config
    values = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "seed"}
    if params.num_beams == 1:
        values["early_stopping"] = False  # transformers' neutral value: the field only exists for beam search
    # Every field set explicitly (unused ones at transformers' neutral defaults, which are ours): transformers
    # fills a field left None from the model's own generation_config.json.
    return GenerationConfig(
        **values,
        decoder_start_token_id=g.decoder_start_token_id,
        eos_token_id=g.eos_token_id,
        pad_token_id=g.pad_token_id,
        return_dict_in_generate=False,
    )


def _decode(model, hidden, mask, config) -> torch.Tensor:
    from transformers.modeling_outputs import BaseModelOutput

    return model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask, generation_config=config
    )


def sequence_scores(
    model, hidden, mask, row_of: torch.Tensor, sequences: torch.Tensor, eos_token_id, length_penalty: float
) -> tuple[list[float], list[int]]:
    """Per sequence: sum of the model's log-probabilities of its tokens up to and including the first </s>,
    divided by length**length_penalty; and that length. One teacher-forced decoder pass (in chunks).

    `sequences` start with the decoder start token; row_of[j] is the input row sequence j answers."""
    targets = sequences[:, 1:]
    eos = torch.as_tensor(eos_token_id, device=targets.device).reshape(-1)
    is_eos = torch.isin(targets, eos).int()
    keep = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first </s>; never the padding after it
    lengths = keep.sum(1)
    per_token = torch.empty(targets.shape, dtype=torch.float32, device=targets.device)
    vocab = model.config.vocab_size
    chunk = max(1, SCORE_CHUNK_ELEMENTS // max(1, targets.shape[1] * vocab))
    for s in range(0, len(sequences), chunk):
        rows = row_of[s : s + chunk]
        logits = model(
            encoder_outputs=(hidden[rows],),
            attention_mask=mask[rows],
            decoder_input_ids=sequences[s : s + chunk, :-1],
        ).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        per_token[s : s + chunk] = logp.gather(-1, targets[s : s + chunk, :, None]).squeeze(-1)
    total = torch.where(keep, per_token, torch.zeros_like(per_token)).sum(1)
    scores = total / lengths.clamp(min=1).float() ** length_penalty
    return scores.tolist(), lengths.tolist()
