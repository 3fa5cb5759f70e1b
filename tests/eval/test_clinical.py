"""Clinical scores and collapse indicators: hand-counted values, and a constant cannot score."""

import pytest

from eval.clinical import clinical_scores, collapse_indicators, is_abnormal

REFS = [
    "Small left pleural effusion.",
    "Mild cardiomegaly. No edema.",
    "No acute cardiopulmonary process.",
    "Right lower lobe consolidation and small right effusion.",
]


def test_a_constant_normal_prediction_scores_zero_abnormal_f1():
    scores = clinical_scores(REFS, ["No acute disease."] * len(REFS))
    assert scores["micro_f1_abnormal"] == 0.0
    assert scores["micro_f1_standard_five"] == 0.0
    # it gets No Finding right on the one normal reference, and wrong (predicts normal) on the three others
    nf = scores["no_finding"]
    assert (nf["precision"], nf["recall"], nf["agreement"]) == (pytest.approx(0.25), 1.0, 0.25)


def test_hand_counted_micro_f1():
    preds = [
        "Small left pleural effusion.",  # effusion: tp
        "No acute disease.",  # cardiomegaly: fn
        "Mild pulmonary edema.",  # edema: fp
        "Right lower lobe consolidation.",  # consolidation tp, effusion fn
    ]
    scores = clinical_scores(REFS, preds)
    # abnormal: tp 2 (effusion, consolidation), fp 1 (edema), fn 2 (cardiomegaly, effusion) -> 4 / (4 + 3)
    assert scores["micro_f1_abnormal"] == pytest.approx(4 / 7)
    assert scores["micro_f1_standard_five"] == pytest.approx(4 / 7)
    eff = scores["per_label"]["Pleural Effusion"]
    assert (eff["precision"], eff["recall"], eff["support"]) == (1.0, 0.5, 2)
    assert scores["per_label"]["Edema"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 1}
    assert "No Finding" not in scores["per_label"]


def test_nothing_to_score_is_none_not_zero():
    scores = clinical_scores(["No acute disease."], ["Normal chest."])
    assert scores["micro_f1_abnormal"] is None and scores["macro_f1_abnormal"] is None
    assert scores["no_finding"]["f1"] == 1.0


def test_collapse_indicators():
    preds = ["No acute disease.", "Mild cardiomegaly.", "no acute  disease.", "No acute disease."]
    c = collapse_indicators(REFS, preds)
    assert c["distinct_predictions"] == 2  # case and spacing do not make a new template
    assert c["top_prediction"] == "no acute disease." and c["top_prediction_share"] == 0.75
    # abnormal references: 0, 1, 3; answered normal: 0 and 3
    assert c["abnormal_references"] == 3 and c["abnormal_answered_normal"] == pytest.approx(2 / 3)


def test_is_abnormal():
    assert [is_abnormal(t) for t in REFS] == [True, True, False, True]
    assert not is_abnormal("Degenerative changes of the spine.")  # not normal, but none of the 12
