"""The retrieval baseline: nearest findings by TF-IDF cosine, deterministic ties."""

from eval.baselines import baseline_predictions
from eval.retrieval import Retriever
from radreport.schema import Example


def ex(i, findings, impression):
    return Example(str(i), "", findings, impression)


TRAIN = [
    ex(0, "Heart size is normal. Lungs are clear.", "No acute disease."),
    ex(1, "Small left pleural effusion. Heart size is normal.", "Small left effusion."),
    ex(2, "Large right pneumothorax with mediastinal shift.", "Tension pneumothorax."),
    ex(3, "Small left pleural effusion. Heart size is normal.", "Left effusion, unchanged."),  # same findings as 1
    ex(4, "Moderate cardiomegaly with pulmonary edema.", "Congestive heart failure."),
]


def test_nearest_by_content():
    r = Retriever(TRAIN)
    queries = [
        "There is a large right pneumothorax.",
        "Cardiomegaly and mild pulmonary edema.",
        "Lungs are clear. Heart size normal.",
    ]
    assert r.nearest(queries).tolist() == [2, 4, 0]
    assert r.predict(queries) == ["Tension pneumothorax.", "Congestive heart failure.", "No acute disease."]


def test_ties_go_to_the_lowest_training_index():
    r = Retriever(TRAIN)
    # identical to rows 1 and 3: row 1 answers, every time, in any batch position
    q = "Small left pleural effusion. Heart size is normal."
    assert r.nearest([q]).tolist() == [1]
    assert r.nearest(["Lungs are clear.", q, q]).tolist() == [0, 1, 1]


def test_query_without_known_words_gets_row_zero():
    assert Retriever(TRAIN).nearest(["Xyzzy plugh."]).tolist() == [0]


def test_batches_give_the_same_answers(monkeypatch):
    import eval.retrieval

    queries = [e.findings for e in TRAIN] * 3
    whole = Retriever(TRAIN).nearest(queries).tolist()
    monkeypatch.setattr(eval.retrieval, "QUERY_BATCH", 2)
    assert Retriever(TRAIN).nearest(queries).tolist() == whole == [0, 1, 2, 1, 4] * 3


def test_retrieval_baseline_rows():
    data = [ex(10, "Large right pneumothorax.", "Right pneumothorax.")]
    assert baseline_predictions("retrieval", data, TRAIN) == ["Tension pneumothorax."]
