import pytest
from rouge_score import rouge_scorer

from eval.rouge import Rouge, split_sentences


def test_rouge_against_hand_computed_values():
    # reference 5 tokens, prediction 3 tokens, 3 unigrams shared: P=1, R=3/5, F=0.75
    s = Rouge(aws_compatible=True).score("no acute cardiopulmonary process today", "no acute process")
    assert s["rouge1"] == pytest.approx(0.75)
    # bigrams: ref 4, pred 2, shared {"no acute"} = 1: P=1/2, R=1/4, F=1/3
    assert s["rouge2"] == pytest.approx(1 / 3)
    # LCS "no acute process" = 3: same as ROUGE-1 here
    assert s["rougeL"] == pytest.approx(0.75)


def test_matches_rouge_score_called_directly(sample_dir):
    import json

    rows = json.loads((sample_dir / "dev1.json").read_text())[:50]
    refs, preds = [r["impression"] for r in rows], [r["findings"] for r in rows]
    direct = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    for r, p, ours in zip(refs, preds, Rouge(aws_compatible=True).score_all(refs, preds), strict=True):
        expected = direct.score(r, p)
        assert all(ours[k] == pytest.approx(expected[k].fmeasure) for k in ours)
    stemmed = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    r, p = refs[0], preds[0]
    assert Rouge().score(r, p)["rougeLsum"] == pytest.approx(
        stemmed.score("\n".join(split_sentences(r)), "\n".join(split_sentences(p)))["rougeLsum"].fmeasure
    )


def test_default_mode_splits_sentences_for_lsum_only():
    ref, pred = "Small effusion. No pneumothorax.", "No pneumothorax. Small effusion."
    default, aws = Rouge().score(ref, pred), Rouge(aws_compatible=True).score(ref, pred)
    # one sequence each: the longest common subsequence is "no pneumothorax" (or "small effusion"), 2 of 4
    assert default["rougeL"] == pytest.approx(0.5) and aws["rougeL"] == pytest.approx(0.5)
    # split into sentences, each sentence finds its match: 4 of 4
    assert default["rougeLsum"] == pytest.approx(1.0)
    assert aws["rougeLsum"] == pytest.approx(0.5)


def test_empty_prediction_scores_zero():
    assert Rouge().score("No acute process.", "  ") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0}


def test_sentence_splitter_keeps_abbreviations_and_list_numbers():
    assert split_sentences("Discussed with Dr. ___ at 5 p.m. on ___. 1. Mild edema. 2. No effusion.") == [
        "Discussed with Dr. ___ at 5 p.m. on ___.",
        "1. Mild edema.",
        "2. No effusion.",
    ]
