"""The one generation helper, by itself (no server): truncation, candidate order, scores that depend only on
the request, every decoding parameter honoured, and the contract's round trip through generation_config.json."""

import pytest
import torch
from transformers import GenerationConfig

from radreport.generation import GenerationParams, encode, generate, params_from_model
from radreport.modeling import load_model, load_tokenizer, read_meta
from radreport.schema import load_examples


@pytest.fixture(scope="module")
def trained(varied_model_dir):
    """The one-epoch tiny model with seeded noise on its weights (tests/conftest.py): the trained model alone
    answers every study alike, and the padding after a shorter answer (the greedy scoring bug) shows only when
    answers differ."""
    return load_model(varied_model_dir), load_tokenizer(varied_model_dir), read_meta(varied_model_dir)


@pytest.fixture(scope="module")
def findings(trained, sample_dir):
    """Four findings of different lengths whose greedy answers end at as many different lengths as there are."""
    model, tok, meta = trained
    texts = [r.findings for r in load_examples(sample_dir / "dev1.json")[:40]]
    answers = generate(model, tok, meta, texts, GenerationParams(num_beams=1, max_new_tokens=24))
    by_length = {}
    for text, g in zip(texts, answers, strict=True):
        by_length.setdefault(g.output_tokens, text)
    picked = list(by_length.values())
    picked += [t for t in texts if t not in picked][: 4 - len(picked)]
    assert len(by_length) >= 3, by_length.keys()  # answers that end early and answers cut at max_new_tokens
    return picked[:4]


SEARCHES = {
    "greedy": GenerationParams(num_beams=1, max_new_tokens=24),
    "beam": GenerationParams(num_beams=4, num_return_sequences=3, max_new_tokens=24),
    "beam_lp2_norepeat": GenerationParams(num_beams=3, length_penalty=2.0, no_repeat_ngram_size=2, max_new_tokens=24),
    "beam_no_early_stop": GenerationParams(num_beams=2, early_stopping=False, max_new_tokens=24),
    "sample_seeded": GenerationParams(
        num_beams=1, do_sample=True, seed=7, top_k=20, top_p=0.9, temperature=1.3, num_return_sequences=3
    ),
    "beam_sample_seeded": GenerationParams(num_beams=3, do_sample=True, seed=11, temperature=1.5, max_new_tokens=24),
}


@pytest.mark.parametrize("name", SEARCHES)
def test_each_request_alone_equals_itself_in_a_mixed_batch(trained, findings, name):
    model, tok, meta = trained
    params = SEARCHES[name]
    together = generate(model, tok, meta, findings, params)
    for f, in_batch in zip(findings, together, strict=True):
        (alone,) = generate(model, tok, meta, [f], params)
        assert [t for t, _ in alone.candidates] == [t for t, _ in in_batch.candidates]
        assert [s for _, s in alone.candidates] == pytest.approx([s for _, s in in_batch.candidates], abs=1e-4)
        assert alone.output_tokens == in_batch.output_tokens


def test_greedy_score_is_the_mean_log_probability_up_to_eos(trained, findings):
    model, tok, meta = trained
    for text in findings:  # the first whose answer ends before the limit
        source = torch.tensor(encode(tok, meta, [text], [""])[0])
        generated = model.generate(input_ids=source, num_beams=1, max_new_tokens=40)[0, 1:].tolist()
        if tok.eos_token_id in generated:
            break
    else:
        pytest.fail("no answer ends within 40 tokens")
    (g,) = generate(model, tok, meta, [text], GenerationParams(num_beams=1, max_new_tokens=40))
    ids = generated[: generated.index(tok.eos_token_id) + 1]  # the answer, closed by </s>: no padding after it
    assert len(ids) == g.output_tokens and tok.decode(ids, skip_special_tokens=True).strip() == g.candidates[0][0]
    labels = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=source, labels=labels).logits
    logp = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    assert g.candidates[0][1] == pytest.approx(logp.mean().item(), abs=1e-5)


def test_beam_scores_are_transformers_sequence_scores_best_first(trained, findings):
    model, tok, meta = trained
    params = GenerationParams(num_beams=4, num_return_sequences=4, max_new_tokens=24, length_penalty=1.5)
    ours = generate(model, tok, meta, findings, params)
    enc = tok.pad({"input_ids": encode(tok, meta, findings, [""] * len(findings))[0]}, return_tensors="pt")
    hf = model.generate(
        **enc,
        num_beams=4,
        num_return_sequences=4,
        max_new_tokens=24,
        length_penalty=1.5,
        early_stopping=True,
        output_scores=True,
        return_dict_in_generate=True,
    )
    hf_scores = hf.sequences_scores.view(len(findings), 4).tolist()
    hf_texts = [t.strip() for t in tok.batch_decode(hf.sequences, skip_special_tokens=True)]
    for i, g in enumerate(ours):
        scores = [s for _, s in g.candidates]
        assert scores == sorted(scores, reverse=True) and len(scores) == 4
        assert scores == pytest.approx(hf_scores[i], abs=1e-4)
        assert [t for t, _ in g.candidates] == hf_texts[i * 4 : (i + 1) * 4]


def test_samples_are_ordered_best_first_and_reproducible_by_seed(trained, findings):
    model, tok, meta = trained
    params = GenerationParams(num_beams=1, do_sample=True, seed=3, temperature=2.0, num_return_sequences=5)
    rng_before = torch.random.get_rng_state()
    first = generate(model, tok, meta, findings[:2], params)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # a request's seed leaves the global stream alone
    again = generate(model, tok, meta, findings[:2], params)
    assert [g.candidates for g in first] == [g.candidates for g in again]
    for g in first:
        scores = [s for _, s in g.candidates]
        assert scores == sorted(scores, reverse=True) and len(scores) == 5
    other_seeds = [
        generate(model, tok, meta, findings[:1], GenerationParams(**{**params.__dict__, "seed": s}))[0]
        for s in (4, 5, 6)
    ]
    assert len({tuple(t for t, _ in g.candidates) for g in [first[0], *other_seeds]}) > 1  # the seed matters


def test_sampling_parameters_are_honoured(trained, findings):
    model, tok, meta = trained
    greedy = generate(model, tok, meta, findings, GenerationParams(num_beams=1, max_new_tokens=24))
    # top_k=1 leaves one token to sample from: greedy search, whatever the temperature or seed
    top1 = generate(
        model, tok, meta, findings, GenerationParams(num_beams=1, max_new_tokens=24, do_sample=True, top_k=1, seed=1)
    )
    assert [g.candidates[0][0] for g in top1] == [g.candidates[0][0] for g in greedy]
    # a hot temperature with no cut wanders off the greedy answer somewhere
    hot = generate(
        model,
        tok,
        meta,
        findings,
        GenerationParams(num_beams=1, max_new_tokens=24, do_sample=True, temperature=5.0, seed=1),
    )
    assert [g.candidates[0][0] for g in hot] != [g.candidates[0][0] for g in greedy]


def test_no_repeat_ngram_size_is_honoured(trained, findings):
    model, tok, meta = trained
    params = GenerationParams(
        num_beams=1, max_new_tokens=40, do_sample=True, temperature=3.0, seed=0, no_repeat_ngram_size=2
    )
    for g in generate(model, tok, meta, findings, params):
        ids = tok(g.candidates[0][0], add_special_tokens=False)["input_ids"]
        bigrams = list(zip(ids, ids[1:], strict=False))
        assert len(bigrams) == len(set(bigrams)), g.candidates[0][0]


def test_long_input_is_cut_at_max_source_tokens_keeping_eos(trained):
    model, tok, meta = trained
    long = "Small left pleural effusion. " * 300
    (ids,), (full,) = encode(tok, meta, [long], [""])
    assert full > meta.max_source_tokens and len(ids) == meta.max_source_tokens and ids[-1] == tok.eos_token_id
    (g,) = generate(model, tok, meta, [long], GenerationParams(num_beams=1, max_new_tokens=4))
    assert g.truncated is True and g.input_tokens == meta.max_source_tokens
    (short,) = generate(model, tok, meta, ["Lungs clear."], GenerationParams(num_beams=1, max_new_tokens=4))
    assert short.truncated is False and short.input_tokens == len(encode(tok, meta, ["Lungs clear."], [""])[0][0])


@pytest.mark.parametrize(
    "params,problem",
    [
        (GenerationParams(temperature=0.7), "temperature: only used when sampling"),
        (GenerationParams(seed=1), "seed: only used when sampling"),
        (GenerationParams(top_p=0.5), "top_p: only used when sampling"),
        (GenerationParams(num_beams=2, num_return_sequences=3), "num_return_sequences: must not exceed num_beams"),
        (GenerationParams(num_beams=2, num_return_sequences=3, do_sample=True), "num_return_sequences: must not"),
        (GenerationParams(do_sample=True, temperature=0.0), "temperature: must be in [0.01, 100.0]"),
        (GenerationParams(do_sample=True, temperature=5e-324), "temperature: must be in [0.01, 100.0]"),
        (GenerationParams(do_sample=True, top_p=1.5), "top_p: must be in (0, 1]"),
        (GenerationParams(num_beams=0), "num_beams: must be in [1, 1024]"),
    ],
)
def test_check_names_every_value_that_would_be_ignored_or_is_out_of_range(params, problem):
    assert any(p.startswith(problem) for p in params.check()), params.check()


def test_sampling_with_one_beam_may_return_more_candidates_than_beams():
    assert GenerationParams(num_beams=1, do_sample=True, num_return_sequences=4).check() == []
    assert GenerationParams(num_beams=1, do_sample=True, num_return_sequences=4).sequences_per_request() == 4
    assert GenerationParams(num_beams=10).sequences_per_request() == 10


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(num_beams=1, max_new_tokens=32),
        GenerationParams(num_beams=1, do_sample=True, top_k=10, top_p=0.8, temperature=0.7, seed=5),
        GenerationParams(num_beams=6, length_penalty=0.5, no_repeat_ngram_size=3, early_stopping=False),
    ],
    ids=["greedy", "sampling", "beam"],
)
def test_written_into_generation_config_and_read_back(tmp_path, params):
    # a config that held another search's values before (a model fine-tuned from one of ours)
    g = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, num_beams=4, early_stopping=True)
    GenerationParams(do_sample=True, temperature=0.3, seed=2).write_into(g)
    params.write_into(g)
    g.save_pretrained(tmp_path)  # transformers validates strictly on save: no value may go unused
    saved = GenerationConfig.from_pretrained(tmp_path)

    class Holder:  # params_from_model reads model.generation_config only
        generation_config = saved

    assert params_from_model(Holder()) == params


def test_turning_sampling_off_drops_the_models_sampling_defaults():
    class Holder:
        generation_config = GenerationConfig(num_beams=1, do_sample=True, temperature=0.6, top_k=5, seed=9)

    p = params_from_model(Holder(), do_sample=False)
    assert p.check() == [] and (p.temperature, p.top_k, p.seed) == (1.0, 50, None)
    assert params_from_model(Holder(), do_sample=False, temperature=0.5).check()[0].startswith("temperature")
    assert params_from_model(Holder()).temperature == pytest.approx(0.6)


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"length_penalty": 1e308}, "length_penalty: must be in [-5, 5]"),  # length**1e308 overflowed mid-predict
        ({"length_penalty": float("nan")}, "length_penalty: must be in [-5, 5]"),
        ({"num_beams": 10**20}, "num_beams: must be in [1, 1024]"),  # past int64: transformers' own error
        ({"max_new_tokens": 10**6}, "max_new_tokens: must be in [1, 65536]"),
    ],
)
def test_generation_config_values_the_libraries_cannot_take_are_refused_before_loading(values, problem):
    from radreport.generation import generation_config_problems

    assert problem in generation_config_problems({"decoder_start_token_id": 0, **values})


def test_out_of_range_beams_are_one_line_not_two():
    assert GenerationParams(num_return_sequences=1025).check() == ["num_return_sequences: must be in [1, 1024]"]


def test_a_server_limit_cannot_exceed_the_contract():
    from serve.config import ServeConfig

    assert "max_num_beams: must be in [1, 1024]" in ServeConfig(max_num_beams=5000, max_batch_sequences=9000).check()
