"""A rule-based labeler for the 14 CheXpert observations, written here (no model, no download).

Each observation in a text is marked positive, negative, uncertain, or absent (None):
1. The text is split into sentences BEFORE anything is lower-cased (the splitter needs the capitals
   and the periods), then into clauses at "but", "however", ";" and the like, so a "no" in one
   sentence never reaches a finding in the next.
2. Mentions are phrases with word boundaries (`stent` is not in "consistent", `drain` not in
   "drainage"); some phrases are exceptions that mention nothing ("pericardial effusion" is no pleural
   effusion, a "calcified nodule" is a healed granuloma, not a Lung Lesion).
3. A negation cue ("no", "without", "negative for", "resolved", ...) before a mention negates it,
   unless its scope ended in between (a new finding "with ...", "there is ...", ", mild ...") or it
   is a pseudo-negation ("no significant change in the pneumothorax" says the pneumothorax is there).
   A cue after the mention ("... is not seen", "has resolved", "is normal") negates too.
4. An uncertainty cue ("may represent", "concerning for", "cannot be excluded", "versus") makes a
   mention uncertain.
Across mentions of one observation: positive beats uncertain beats negative (CheXpert's aggregation).
No Finding is positive when no observation but Support Devices is positive or uncertain AND nothing
else abnormal is mentioned (emphysema, scoliosis, calcified granulomas, hernia, ...: CheXpert's own rule,
and what human coders mean by "normal").

bench/labeler_agreement.py measures it against the human MeSH coding of Indiana reports.
"""

from __future__ import annotations

import re
from functools import lru_cache

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
# The five of the CheXpert competition, and the twelve abnormal observations (neither No Finding nor
# Support Devices: a line or tube is no disease, and No Finding does not count it either).
STANDARD_FIVE = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
ABNORMAL = tuple(o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices"))

# Words that may stand between a subject and what is said of it ("the heart is mildly enlarged").
_GAP = r"(?:[\w-]+\s+){0,4}?"
_HEART = (
    r"(?:heart(?: size)?|cardiac (?:silhouette|shadow|contour|size|diameter)s?"
    r"|cardio-?\s?mediastinal (?:silhouette|contour|shadow)s?)"
)
# "top normal" and "at the upper limits of normal" are normal: human coders do not code them
_ENLARGED = r"(?:enlarged|enlargement|large|larger|increased|prominent|borderline)"
_VESSELS = r"(?:(?:pulmonary |central |hilar )?(?:vascularity|vasculature|vessels|vascular markings))"
_VESSELS_ABNORMAL = r"(?:accentuat\w*|prominen\w*|engorge\w*|congest\w*|indistinct\w*|cephaliz\w*|redistribut\w*)"

# Mentions, matched on lower-cased text with word boundaries around each alternative.
MENTIONS: dict[str, list[str]] = {
    "Atelectasis": [r"atelecta\w*", r"collapsed?"],
    "Cardiomegaly": [
        r"cardiomegaly",
        rf"{_HEART}\s+(?:(?:is|are|appears?|remains?|seems?)\s+)?{_GAP}{_ENLARGED}",
        rf"(?:enlarged|large|prominent|borderline(?: enlarged)?)\s+(?:\w+\s+)?{_HEART}",
        r"(?:cardiac|heart) enlargement",
        rf"enlargement of the {_HEART}",
    ],
    "Consolidation": [r"consolidat\w*"],
    "Edema": [
        r"edema",
        r"(?:vascular|venous|pulmonary) congestion",
        r"congestive heart failure|heart failure|\bchf",
        r"fluid overload",
        rf"{_VESSELS}\s+{_GAP}{_VESSELS_ABNORMAL}",
        rf"{_VESSELS_ABNORMAL}\s+(?:\w+\s+)?{_VESSELS}",
        r"vascular (?:congestion|prominence|engorgement|indistinctness|cephalization|redistribution)",
        r"indistinct vascular (?:margins|margination)",
        r"mild congestion|congestive changes?",
    ],
    "Enlarged Cardiomediastinum": [
        r"widen\w* (?:of )?(?:the )?(?:upper |superior )?mediastin\w*",
        r"mediastinal widening",
        r"(?:widened|wide|enlarged|prominent) (?:upper |superior )?mediastin\w*(?: contours?| silhouette)?",
        r"mediastin\w*(?: contours?| silhouette)? (?:is |are |appears? |remains? )?(?:\w+ )?(?:widened|enlarged)",
    ],
    "Fracture": [r"fractur\w*"],
    "Lung Lesion": [
        r"nodul\w*",
        r"mass(?:es)?",
        r"neoplasms?",
        r"tumou?rs?",
        r"carcinoma",
        r"(?:lung|pulmonary|cavitary|spiculated) lesions?",
        r"cavitation|cavitary|cavity|cavities",
    ],
    "Lung Opacity": [
        r"opaci\w*",
        r"infiltrat\w*",
        r"air[- ]?space (?:disease|process|opaci\w*|filling)",
        r"interstitial (?:markings?|opaci\w*|pattern|prominence|disease|lung disease|thickening|accentuation"
        r"|changes?|infiltrat\w*|densit\w*)",
        r"increased (?:interstitial |lung |pulmonary )?markings",
        r"reticul\w*",
        r"ground[- ]glass",
        r"hazy|haziness",
        r"(?:lung|pulmonary|parenchymal|basilar|basal|lobe|lingular|retrocardiac|perihilar|airspace|hazy|patchy"
        r"|streaky|linear|focal|increased|apical) densit(?:y|ies)",
        r"densit(?:y|ies) (?:in|at|within|of|projecting over) the (?:right |left )?(?:lung|lower|upper|middle|mid|base"
        r"|lingula|retrocardiac|apex|apical|perihilar)",
        r"scar\w*",
        r"fibros\w*|fibrotic",
        r"peribronchial (?:thickening|cuffing)|bronchial wall thickening",
    ],
    "Pleural Effusion": [r"effusions?", r"pleural fluid", r"hydropneumothora\w*"],
    "Pleural Other": [
        r"pleural (?:thickening|plaques?|calcifications?|scar\w*)",
        r"pleuro-?parenchymal (?:scar\w*|thickening)|pleural-parenchymal (?:scar\w*|thickening)",
        r"fibrothorax",
        r"thickening of the pleura",
        r"(?:bi)?apical (?:pleural )?(?:thickening|capping|caps?)",
    ],
    "Pneumonia": [r"pneumonias?", r"bronchopneumonia", r"pneumonitis", r"infections?", r"infectious"],
    "Pneumothorax": [r"pneumothora\w*", r"hydropneumothora\w*"],
    "Support Devices": [
        r"(?:endotracheal|et|nasogastric|ng|og|orogastric|enteric|feeding|chest|tracheostomy|gastrostomy|dobhoff"
        r"|thoracostomy|drainage) tubes?",
        r"tracheostomy",
        r"(?:central venous|venous|central|arterial|port|jugular|ij|subclavian|dialysis|hickman|swan-ganz|picc)"
        r" (?:line|catheter)s?",
        r"picc",
        r"catheters?",
        r"pacemakers?|pacers?",
        r"(?:pacing|pacer|pacemaker|icd|aicd|defibrillator|monitor|monitoring|ecg|ekg|cardiac) (?:leads?|wires?)",
        r"(?:aicd|icd)",
        r"defibrillators?",
        r"(?:pacemaker|pacer|generator|battery) pack|pulse generator",
        r"port-a-cath|portacath|mediport|power port|(?:chest|subclavian|chest wall|infusion) port",
        r"stents?|stent graft",
        r"drains?",
        r"(?:valve) (?:replacement|prosthesis)|(?:prosthetic|mechanical|replaced) (?:\w+ )?valve",
        r"(?:electronic|cardiac|monitoring|implanted|medical) devices?",
        r"(?:loop|event) recorder",
        r"generator|closure device|occluder",
        r"leads",
    ],
}

# Mentions that are not what they seem: a mention inside one of these is dropped.
NOT_MENTIONS: dict[str, list[str]] = {
    "Pleural Effusion": [r"pericardial effusions?", r"joint effusions?"],
    "Lung Lesion": [
        # calcified nodules are healed granulomas (CheXpert's labeler excludes them too); "non-calcified" ones are not
        r"(?<!non)(?<!non-)(?<!un)calcified (?:[\w-]+ ){0,4}?nodul\w*",
        r"nodul\w* (?:[\w-]+ ){0,3}?(?:is |are )?(?:densely |likely |probably )?calcified",
        r"massive|mass effect",
        r"(?:bone|bony|osseous|lytic|sclerotic|blastic|skin|soft tissue) lesions?",
        r"nodular (?:contour|thickening|pleural)",
    ],
    "Lung Opacity": [
        r"pleural (?:scar\w*)|pleuro-?parenchymal scar\w*|pleural-parenchymal scar\w*",
        r"(?:bone|bony|osseous|soft tissue|breast|mineral|calcific|calcified|metallic|nodular|round|rounded) densit\w*",
    ],
    "Pneumonia": [r"(?:granulomatous|prior|old|healed|remote|previous|viral|fungal|tuberculous) (?:\w+ )?infections?"],
    "Fracture": [
        r"(?:catheter|line|wire|lead|tube|hardware)s? fractur\w*",
        r"fractur\w* (?:of|in) the (?:[\w-]+ ){0,3}?(?:catheter|line|wire|lead|tube|hardware)s?",
    ],
    "Atelectasis": [r"(?:vertebral|vertebra|vertebral body|body height|height) collapsed?"],
    "Support Devices": [r"(?:chest|port)[- ](?:line|catheter)s? (?:are|is) (?:not|no)", r"(?:leads|lead) to"],
}

# Abnormalities outside the 14 observations: they make a report not normal (No Finding), nothing else.
OTHER_FINDINGS = [
    r"emphysema\w*|copd|chronic obstructive|bullae|bullous|blebs?",
    r"hyper-?(?:inflat|expan|aerat|lucen)\w*|over-?(?:inflat|expan)\w*|flatten\w*",
    r"(?:low|decreased|diminished|reduced|small) (?:lung )?volumes?|hypoinflat\w*|hypoventilat\w*|volume loss",
    r"calcifi\w*|granulom\w*",
    r"degenerat\w*|spondylo\w*|osteophyt\w*|arthrit\w*|arthropath\w*|djd|dish",
    r"scolio\w*|kyphos\w*|kyphotic|lordo\w*|deformit\w*|compression",
    r"tortu\w*|ectatic|ectasia|unfold\w*|atherosclero\w*|atheromatous|aneurysm\w*|dilat\w*",
    r"hernia\w*",
    r"(?:elevat\w*|eventrat\w*) (?:of )?(?:the )?(?:right |left )?(?:hemi)?diaphragm\w*",
    r"(?:hemi)?diaphragm\w* (?:is |are )?(?:\w+ )?(?:elevated|eventrat\w*)",
    r"blunt\w*",
    r"sternotomy|cabg|clips?|surgical|post-?operative|post-?surgical|status post|resection|lobectomy"
    r"|pneumonectomy|thoracotomy|mastectomy|implants?|hardware|fusion|prosthes\w*",
    r"adenopathy|lymphadenopathy|(?:hilar|hila) (?:prominence|enlargement|fullness)|(?:prominent|enlarged|full) hil\w*",
    r"osteopeni\w*|demineraliz\w*|osteoporo\w*|lucenc\w*|lytic|sclerotic|metasta\w*",
    r"foreign bod\w*|bullet|shrapnel|metallic",
    r"(?:increased|prominent|coarse\w*|accentuated) (?:bronchovascular |interstitial |lung )?markings",
    r"(?:pulmonary arter\w*) (?:\w+ )?(?:enlarg\w*|prominen\w*)|(?:enlarged|prominent) pulmonary arter\w*",
    r"shift\w*|deviat\w*|cyst\w*|cavit\w*|sarcoid\w*|tuberculosis|bronchiectasis|bronchitis|airways? disease",
    r"epicardial fat|fat pad|azygos lobe",
]

PRE_NEGATION = (
    r"\bno\b|\bnot\b|\bwithout\b|\bnegative for\b|\bfree of\b|\babsence of\b|\bresolution of\b|\bresolved\b"
    r"|\bresolving\b|\bclear of\b|\bclearing of\b|\brather than\b|\bnor\b|\bremoval of\b|\bremoved\b"
    r"|(?<!cannot )(?<!can not )(?<!not )\brule(?:d)? out\b|\bexclude[sd]?\b|\bnegative\b"
)
# "no change in the effusion", "no significant interval increase in the opacity": the finding is there;
# "cannot exclude an effusion" hedges it.
PSEUDO_NEGATION = (
    r"\b(?:cannot|can not|could not|not) (?:be )?(?:entirely |completely |definitely )?(?:exclude[sd]?|ruled? out)\b|"
    r"\b(?:no|without)\s+(?:(?:significant|appreciable|substantial|definite|marked|interval|further|other|"
    r"real|major|acute|new|short-term)\s+)*(?:change|increase|decrease|worsening|progression|improvement|"
    r"difference|interval change)\w*\b|\bnot (?:only|significantly changed|changed)\b|\bno longer\b(?= (?:the|a)\b)"
)
POST_NEGATION = (
    r"^\s*(?:[\w-]+\s+){0,4}?(?:(?:is|are|was|were|has been|have been)\s+)?(?:not|no longer)\s+(?:\w+ly\s+)?"
    r"(?:seen|present|identified|visualized|evident|demonstrated|appreciated|noted|visible|apparent|detected|"
    r"enlarged|large|increased|widened)"
    r"|^\s*(?:[\w-]+\s+){0,4}?(?:has|have)\s+(?:\w+\s+)?resolved|^\s*(?:[\w-]+\s+){0,4}?(?:is|are)\s+(?:now\s+)?"
    r"(?:resolved|absent|gone|removed|clear|cleared)|^\s*(?:[\w-]+\s+){0,3}?(?:has|have) been removed"
    r"|^\s*(?:[\w-]+\s+){0,2}?(?:is|are|appears?|remains?)\s+(?:\w+\s+)?(?:normal|unremarkable|within normal)"
    r"|^\s*(?:[\w-]+\s+){0,2}?(?:within normal limits)|^\s*(?:[\w-]+\s+){0,3}?(?:is|are|was|were) ruled out"
)
# A negation's scope ends where a new statement starts between the cue and the mention.
SCOPE_END = (
    r"\b(?:with|which|there is|there are|there has been|is seen|are seen|is present|are present|is noted"
    r"|are noted|demonstrat\w*|and (?:the|there|a|an)|except|other than|aside from|apart from|besides"
    r"|although|though|whereas)\b"
    r"|,\s*(?:mild|mildly|moderate|moderately|severe|severely|stable|unchanged|persistent|chronic|old|healed"
    r"|borderline|increased|increasing|decreased|decreasing|improved|improving|worsened|worsening|again)\b"
)
UNCERTAIN = (
    r"\bmay\b|\bmight\b|\bpossibl\w*|\bprobabl\w*|\blikely\b|\bcould\b"
    r"|\b(?:cannot|can not|could not) (?:be )?(?:entirely )?(?:exclude[sd]?|ruled? out)\b"
    r"|\bsuspicious for\b|\bconcerning for\b|\bsuggest\w*"
    r"|\bquestionabl\w*|\bquestion of\b|\bversus\b|\bvs\b|\bequivocal\b|\brepresent\w*|\bdifferential\b"
    r"|\bnot excluded\b|\bor\b|\bsuspect\w*|\bworrisome\b|\bpresum\w*|\bconsider\w*|\bconcern\b|\bperhaps\b"
    r"|\bvague\w*|\bsubtle\b|\bfavor\w*|\bsuspicion\b|\bpotential\w*"
)
# After a mention, only cues that hedge the mention itself: "consolidation concerning for pneumonia" sees
# the consolidation and is unsure of pneumonia.
POST_UNCERTAIN = (
    r"^\s*(?:[\w-]+\s+){0,3}?(?:cannot be (?:excluded|ruled out)|can not be (?:excluded|ruled out)|"
    r"(?:is|are) not (?:entirely )?excluded|(?:is|are) (?:possible|suspected|questionable|likely|not entirely "
    r"excluded)|may be present|(?:is|are) not (?:entirely )?ruled out)"
)

_CLAUSE = re.compile(
    r";|:\s|,\s*(?:but|however|although|though|while|whereas)\b|\bbut\b|\bhowever\b|\bwhereas\b"
    r"|\bwith interval\b|\bnow (?:with|shows?)\b"
)
_RANK = {"positive": 3, "uncertain": 2, "negative": 1}

# Sentence ends: ., ! or ? then space (or a capital straight after a word), or a line break. Not after
# abbreviations, initials or "p.m."-like words.
_END = re.compile(r"(?<=[.!?])\s+|(?<=[a-z]{2}\.)(?=[A-Z])|\n+")
_ABBREV = {"dr", "vs", "approx", "st", "mr", "mrs", "ms", "fig", "cf", "e.g", "i.e", "etc", "sq"}


def split_sentences(text: str) -> list[str]:
    """Sentences of a report, split on the original text (case and periods intact)."""
    parts, start = [], 0
    for m in _END.finditer(text):
        before = text[start : m.start()].rstrip(".!?").rsplit(None, 1)
        last = before[-1].lower() if before else ""
        if "\n" not in m.group() and (last in _ABBREV or re.fullmatch(r"[a-z]|(?:[a-z]\.)+[a-z]?", last)):
            continue
        parts.append(text[start : m.start()].strip())
        start = m.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _alternatives(patterns: list[str]) -> re.Pattern:
    return re.compile("|".join(rf"\b(?:{p})\b" for p in patterns))


_MENTION_RE = {o: _alternatives(p) for o, p in MENTIONS.items()}
_NOT_MENTION_RE = {o: _alternatives(p) for o, p in NOT_MENTIONS.items()}
_OTHER_RE = _alternatives(OTHER_FINDINGS)
_PRE_NEG, _PSEUDO = re.compile(PRE_NEGATION), re.compile(PSEUDO_NEGATION)
_POST_NEG, _SCOPE_END = re.compile(POST_NEGATION), re.compile(SCOPE_END)
_UNCERTAIN, _POST_UNCERTAIN = re.compile(UNCERTAIN), re.compile(POST_UNCERTAIN)
_IN_SPAN_NEG = re.compile(r"\b(?:not|no|without|normal)\b")


def _negated_before(before: str) -> bool:
    """A negation cue before the mention whose scope reaches it (no pseudo-negation, no scope end between)."""
    pseudo = [m.span() for m in _PSEUDO.finditer(before)]
    for cue in reversed(list(_PRE_NEG.finditer(before))):
        if any(s <= cue.start() < e for s, e in pseudo):
            continue
        return not _SCOPE_END.search(before[cue.end() :])
    return False


def _mention_state(clause: str, start: int, end: int) -> str:
    before, span, after = clause[:start], clause[start:end], clause[end:]
    if _negated_before(before) or _POST_NEG.match(after) or _IN_SPAN_NEG.search(span):
        return "negative"
    if _UNCERTAIN.search(before) or _POST_UNCERTAIN.match(after):
        return "uncertain"
    return "positive"


def _mentions(pattern: re.Pattern, exclude: re.Pattern | None, clause: str):
    excluded = [m.span() for m in exclude.finditer(clause)] if exclude else []
    for m in pattern.finditer(clause):
        if not any(s <= m.start() and m.end() <= e for s, e in excluded):
            yield m


@lru_cache(maxsize=65536)
def _label(text: str) -> tuple:
    states: dict[str, str | None] = {o: None for o in OBSERVATIONS}
    other = None
    for sentence in split_sentences(text):
        for clause in _CLAUSE.split(sentence.lower()):
            for obs, pattern in _MENTION_RE.items():
                for m in _mentions(pattern, _NOT_MENTION_RE.get(obs), clause):
                    state = _mention_state(clause, m.start(), m.end())
                    if states[obs] is None or _RANK[state] > _RANK[states[obs]]:
                        states[obs] = state
            for m in _OTHER_RE.finditer(clause):
                if _mention_state(clause, m.start(), m.end()) != "negative":
                    other = "positive"
    if text.strip() and other is None and not any(states[o] in ("positive", "uncertain") for o in ABNORMAL):
        states["No Finding"] = "positive"
    return tuple(states[o] for o in OBSERVATIONS)


def label(text: str) -> dict[str, str | None]:
    """Report text -> {observation: 'positive' | 'negative' | 'uncertain' | None}."""
    return dict(zip(OBSERVATIONS, _label(text), strict=True))


def is_positive(state: str | None) -> bool:
    """For F1, uncertain counts as positive (the 'U-ones' convention), negative and absent as negative."""
    return state in ("positive", "uncertain")
