"""The one generation helper: offline prediction and the service both call `generate`.

It renders the prompt the model directory was trained with, tokenises with its limits, runs beam
search and returns the candidates with their sequence scores, so offline and online numbers cannot
diverge.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from radreport.modeling import ModelMeta
from radreport.prompt import render


@dataclass(frozen=True)
class GenerationParams:
    """How an impression is decoded: the one contract of training, evaluation and serving.

    Training writes these into the exported model's generation_config.json (the `generation:` section of a
    train config); `eval predict` and the service read them back from there as defaults and override them per
    call. Server limits (how many beams a request may ask for) live in the serve config, not here.
    """

    num_beams: int = 4
    """Beam width; 1 is greedy search."""
    max_new_tokens: int = 128
    """Tokens generated at most, the closing </s> included."""
    num_return_sequences: int = 1
    """Candidates returned, best first; at most num_beams."""
    length_penalty: float = 1.0
    """Beam scores are sum(log p) / length**length_penalty; > 1 favours longer impressions."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size (0: off)."""
    early_stopping: bool = True
    """Beam search stops once num_beams finished candidates exist."""

    def check(self) -> list[str]:
        errors = []
        if self.num_beams < 1:
            errors.append("num_beams: must be >= 1")
        if self.max_new_tokens < 1:
            errors.append("max_new_tokens: must be >= 1")
        if not 1 <= self.num_return_sequences <= max(self.num_beams, 1):
            errors.append("num_return_sequences: must be between 1 and num_beams")
        if self.no_repeat_ngram_size < 0:
            errors.append("no_repeat_ngram_size: must be >= 0")
        return errors

    def write_into(self, generation_config) -> None:
        """Set these values on a transformers GenerationConfig (saved as the model's generation_config.json)."""
        for f in fields(self):
            setattr(generation_config, f.name, getattr(self, f.name))


@dataclass
class Generated:
    candidates: list[tuple[str, float]]  # best first: (text, sequence log-probability score)
    input_tokens: int
    output_tokens: int
    truncated: bool


def params_from_model(model, **overrides) -> GenerationParams:
    """Defaults from the model directory's generation_config.json, then explicit values."""
    g, default = model.generation_config, GenerationParams()
    base = {}
    for f in fields(GenerationParams):
        value = getattr(g, f.name, None)
        base[f.name] = getattr(default, f.name) if value is None else type(getattr(default, f.name))(value)
    base["num_beams"] = base["num_beams"] or 1
    base["max_new_tokens"] = base["max_new_tokens"] or default.max_new_tokens
    base.update({k: v for k, v in overrides.items() if v is not None})
    return GenerationParams(**base)


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    meta: ModelMeta,
    findings: list[str],
    params: GenerationParams,
    backgrounds: list[str] | None = None,
) -> list[Generated]:
    """Beam search over one batch; every request in it shares `params`."""
    backgrounds = backgrounds or [""] * len(findings)
    prompts = [render(f, meta.prompt_template, b) for f, b in zip(findings, backgrounds, strict=True)]
    # Tokenise once; truncate by hand (keeping the closing </s>, as truncation=True does) so the full length,
    # which says whether the input was cut, costs no second pass.
    full = tokenizer(prompts)["input_ids"]
    limit = meta.max_source_tokens
    cut = [ids if len(ids) <= limit else ids[: limit - 1] + [tokenizer.eos_token_id] for ids in full]
    enc = tokenizer.pad({"input_ids": cut}, return_tensors="pt")
    enc = {k: v.to(model.device) for k, v in enc.items()}
    out = model.generate(
        **enc,
        num_beams=params.num_beams,
        max_new_tokens=params.max_new_tokens,
        num_return_sequences=params.num_return_sequences,
        length_penalty=params.length_penalty,
        no_repeat_ngram_size=params.no_repeat_ngram_size,
        early_stopping=params.early_stopping and params.num_beams > 1,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    seqs = out.sequences.view(len(prompts), params.num_return_sequences, -1)
    if params.num_beams > 1:
        scores = out.sequences_scores.view(len(prompts), params.num_return_sequences).tolist()
    else:  # greedy: the mean log-probability of the chosen tokens
        logps = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        scores = [
            [float(row[row > -float("inf")].mean()) if row.numel() else 0.0]
            for row in logps.view(len(prompts), 1, -1)[:, 0]
        ]
    results = []
    for i in range(len(prompts)):
        texts = tokenizer.batch_decode(seqs[i], skip_special_tokens=True)
        best = seqs[i][0][1:].tolist()  # drop the decoder start token
        out_tokens = best.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in best else len(best)
        results.append(
            Generated(
                [(t.strip(), float(s)) for t, s in zip(texts, scores[i], strict=True)],
                input_tokens=min(len(full[i]), meta.max_source_tokens),
                output_tokens=out_tokens,
                truncated=len(full[i]) > meta.max_source_tokens,
            )
        )
    return results
