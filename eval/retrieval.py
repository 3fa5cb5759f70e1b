"""The retrieval baseline: answer with the impression of the training study whose findings are most alike.

TF-IDF over word uni- and bigrams (scikit-learn's TfidfVectorizer; bigrams keep "no effusion" apart from
"effusion"; no stop-word list, which would drop "no"), cosine similarity (rows are L2-normalised, so a
matrix product is the cosine), and the best training study per query. Ties go to the lowest training
index, so the answer never depends on the machine; a query that shares no term with any training findings
gets training study 0 by the same rule.

Identical findings texts (radiology templates repeat thousands of times) are one document: for the
inverse document frequencies and for the search, where the lowest index among them answers.

It is the bar a trained model must clear: on held-out Indiana reports (docs/quality.md) it scores ROUGE-L
0.546 where the most frequent impression scores 0.429, and abnormal F1 0.233 where a constant scores 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from radreport.errors import InputError
from radreport.schema import Example

# Queries per product: the scores of one batch are a dense (distinct training texts x QUERY_BATCH) float32
# block, 100 MB for 100,000 texts.
QUERY_BATCH = 256


class Retriever:
    def __init__(self, train: list[Example]):
        if not train:
            raise ValueError("retrieval needs at least one training study")
        first: dict[str, int] = {}
        for i, e in enumerate(train):
            first.setdefault(e.findings, i)
        self.train_index = np.fromiter(first.values(), dtype=np.int64, count=len(first))  # ascending
        self.vectorizer = TfidfVectorizer(
            lowercase=True, ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", sublinear_tf=True, dtype=np.float32
        )
        # distinct texts x terms, by column: a batch of queries needs only the columns of its own terms
        try:
            self.matrix = self.vectorizer.fit_transform(list(first)).tocsc()
        except ValueError as e:  # scikit-learn: "empty vocabulary"
            raise InputError(f"training data: no word to index in any findings text ({e})") from None
        self.impressions = [e.impression for e in train]

    def nearest(self, findings: list[str]) -> np.ndarray:
        """Training index of the most similar study for each findings text (ties: the lowest index)."""
        out = np.zeros(len(findings), dtype=np.int64)
        for start in range(0, len(findings), QUERY_BATCH):
            queries = self.vectorizer.transform(findings[start : start + QUERY_BATCH])
            terms = np.unique(queries.indices)
            # sparse (texts x terms) @ dense (terms x queries): one pass over the postings of the batch's terms
            scores = self.matrix[:, terms] @ queries[:, terms].T.toarray()
            best = scores.argmax(axis=0)  # first maximum: the lowest index among equals
            out[start : start + queries.shape[0]] = self.train_index[best]
        return out

    def predict(self, findings: list[str]) -> list[str]:
        return [self.impressions[i] for i in self.nearest(findings)]
