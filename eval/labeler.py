"""A rule-based labeler for the 14 CheXpert observations, written here (no model, no download).

Each observation in an impression is marked positive, negative, uncertain, or absent (None).
Mentions are found by patterns; a negation cue ("no", "without", "resolved", ...) before the mention
in the same clause, or after it ("... is not seen"), negates it; an uncertainty cue ("may represent",
"concerning for", "cannot be excluded", ...) makes it uncertain. Across sentences: positive beats
uncertain beats negative (CheXpert's aggregation). No Finding is positive when nothing but support
devices is positive or uncertain.
"""

from __future__ import annotations

import re

from eval.rouge import split_sentences

OBSERVATIONS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

MENTIONS = {
    "Atelectasis": r"atelecta\w*|collapse",
    "Cardiomegaly": r"cardiomegaly|(?:heart|cardiac silhouette)(?: size)? (?:is |are )?(?:\w+ly )?(?:enlarged|large)"
    r"|enlarge\w* (?:of the )?(?:heart|cardiac silhouette)",
    "Consolidation": r"consolidat\w*",
    "Edema": r"edema|(?:vascular|venous) congestion|\bchf\b|heart failure",
    "Enlarged Cardiomediastinum": r"widen\w* (?:of the )?mediastin\w*|mediastinal widening|enlarged cardiomediastin\w*",
    "Fracture": r"fractur\w*",
    "Lung Lesion": r"nodul\w*|\bmass(?:es)?\b|lesion|neoplasm|tumou?r",
    "Lung Opacity": r"opacit\w*|infiltrat\w*|haziness|airspace disease",
    "Pleural Effusion": r"effusion",
    "Pleural Other": r"pleural thickening|pleural plaque|fibrothorax",
    "Pneumonia": r"pneumonia|infection|infectious process",
    "Pneumothorax": r"pneumothora\w*",
    "Support Devices": r"\b(?:et|endotracheal|nasogastric|ng|og|chest|feeding|tracheostomy) tube|\bline\b|catheter"
    r"|pacemaker|pacer|\bleads?\b|\bpicc\b|\bicd\b|stent|port-a-cath|drain",
}
NO_ACUTE = (
    r"no (?:acute|active) (?:cardiopulmonary|intrathoracic|pulmonary|chest)?\s*"
    r"(?:process|disease|abnormalit\w*|findings?)"
    r"|normal chest|negative chest|\bclear lungs\b|lungs are clear"
)

PRE_NEGATION = (
    r"\bno\b|\bnot\b|\bwithout\b|negative for|free of|absence of|resolution of|resolved|clear of|"
    r"rather than|\bnor\b|no evidence of|no signs? of|removal of|removed"
)
POST_NEGATION = (
    r"(?:is|are|has|have) (?:not|no longer) (?:seen|present|identified|visualized)|has resolved|have resolved"
    r"|(?:is|are|has been|have been) removed|resolved"
)
UNCERTAIN = (
    r"\bmay\b|\bmight\b|possibl\w*|probabl\w*|\blikely\b|cannot be (?:excluded|ruled out)|could\b|"
    r"suspicious for|concerning for|suggest\w*|questionabl\w*|\bversus\b|\bvs\b|equivocal|"
    r"represent|differential|not excluded|rule out|\bor\b"
)

# After a mention, only cues that hedge the mention itself: "consolidation concerning for pneumonia" sees
# the consolidation and is unsure of pneumonia.
POST_UNCERTAIN = (
    r"^\s*(?:\w+\s+){0,3}?(?:cannot be (?:excluded|ruled out)|(?:is|are) not excluded|"
    r"(?:is|are) (?:possible|suspected|questionable|likely|not entirely excluded)|may be present)"
)

_CLAUSE = re.compile(r";|,\s*(?:but|however|although|though|while)\b|\bbut\b|\bhowever\b|\bwith interval\b")
_RANK = {"positive": 3, "uncertain": 2, "negative": 1}


def _mention_state(clause: str, start: int, end: int) -> str:
    before, after = clause[:start], clause[end:]
    if re.search(PRE_NEGATION, before) or re.match(rf"\s*(?:\w+\s+){{0,3}}?(?:{POST_NEGATION})", after):
        return "negative"
    if re.search(UNCERTAIN, before) or re.search(POST_UNCERTAIN, after):
        return "uncertain"
    return "positive"


def label(text: str) -> dict[str, str | None]:
    """Impression text -> {observation: 'positive' | 'negative' | 'uncertain' | None}."""
    states: dict[str, str | None] = {o: None for o in OBSERVATIONS}
    for sentence in split_sentences(text.lower()):
        for clause in _CLAUSE.split(sentence):
            for obs, pattern in MENTIONS.items():
                for m in re.finditer(pattern, clause):
                    state = _mention_state(clause, m.start(), m.end())
                    if states[obs] is None or _RANK[state] > _RANK[states[obs]]:
                        states[obs] = state
    findings = [
        o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices") and states[o] in ("positive", "uncertain")
    ]
    if not findings:
        if re.search(NO_ACUTE, text.lower()) or any(states[o] == "negative" for o in OBSERVATIONS):
            states["No Finding"] = "positive"
    return states


def is_positive(state: str | None) -> bool:
    """For F1, uncertain counts as positive (the 'U-ones' convention), negative and absent as negative."""
    return state in ("positive", "uncertain")


def agreement(references: list[str], predictions: list[str]) -> dict:
    """Per-observation precision/recall/F1 of predicted against reference labels, plus micro and macro F1."""
    tp = {o: 0 for o in OBSERVATIONS}
    fp, fn = dict(tp), dict(tp)
    for ref, pred in zip(references, predictions, strict=True):
        r, p = label(ref), label(pred)
        for o in OBSERVATIONS:
            a, b = is_positive(r[o]), is_positive(p[o])
            tp[o] += a and b
            fp[o] += b and not a
            fn[o] += a and not b
    per = {}
    for o in OBSERVATIONS:
        prec = tp[o] / (tp[o] + fp[o]) if tp[o] + fp[o] else 0.0
        rec = tp[o] / (tp[o] + fn[o]) if tp[o] + fn[o] else 0.0
        per[o] = {
            "precision": prec,
            "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "support": tp[o] + fn[o],
        }
    T, F_p, F_n = sum(tp.values()), sum(fp.values()), sum(fn.values())
    micro = 2 * T / (2 * T + F_p + F_n) if T + F_p + F_n else 0.0
    present = [o for o in OBSERVATIONS if per[o]["support"] > 0]
    macro = sum(per[o]["f1"] for o in present) / len(present) if present else 0.0
    return {"per_label": per, "micro_f1": micro, "macro_f1": macro}
