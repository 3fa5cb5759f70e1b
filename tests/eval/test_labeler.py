import pytest

from eval.labeler import agreement, label


def positives(text):
    return {k: v for k, v in label(text).items() if v}


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "No pleural effusion or pneumothorax.",
            {"Pleural Effusion": "negative", "Pneumothorax": "negative", "No Finding": "positive"},
        ),
        ("Small left pleural effusion. No pneumothorax.", {"Pleural Effusion": "positive", "Pneumothorax": "negative"}),
        (
            "Right lower lobe opacity may represent atelectasis or pneumonia.",
            {"Lung Opacity": "positive", "Atelectasis": "uncertain", "Pneumonia": "uncertain"},
        ),
        ("Moderate cardiomegaly with mild pulmonary edema.", {"Cardiomegaly": "positive", "Edema": "positive"}),
        ("The pneumothorax has resolved.", {"Pneumothorax": "negative", "No Finding": "positive"}),
        (
            "Heart is mildly enlarged, but there is no effusion.",
            {"Cardiomegaly": "positive", "Pleural Effusion": "negative"},
        ),
        (
            "Endotracheal tube in standard position. No acute cardiopulmonary process.",
            {"Support Devices": "positive", "No Finding": "positive"},
        ),
        (
            "Consolidation concerning for pneumonia; pneumothorax cannot be excluded.",
            {"Consolidation": "positive", "Pneumonia": "uncertain", "Pneumothorax": "uncertain"},
        ),
        ("Acute right sixth rib fracture without pneumothorax.", {"Fracture": "positive", "Pneumothorax": "negative"}),
    ],
)
def test_crafted_sentences(text, expected):
    assert positives(text) == expected


def test_agreement_perfect_and_miss():
    refs = ["Small left pleural effusion.", "No acute cardiopulmonary process."]
    assert agreement(refs, refs)["micro_f1"] == 1.0
    miss = agreement(refs, ["No acute cardiopulmonary process.", "No acute cardiopulmonary process."])
    assert miss["per_label"]["Pleural Effusion"]["recall"] == 0.0 and miss["micro_f1"] < 1.0


def test_labeler_recovers_synthetic_labels():
    """The generator knows each study's true labels: the labeler must agree on most of them."""
    import random

    from train.synthetic import make_study

    r = random.Random(1)
    agree = total = 0
    for _ in range(300):
        s = make_study(r)
        got = label(" ".join(s.impression))
        for obs, state in s.labels.items():
            total += 1
            agree += (got[obs] in ("positive", "uncertain")) == (state in ("positive", "uncertain"))
    assert agree / total > 0.95
