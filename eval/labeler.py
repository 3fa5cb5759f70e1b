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
from pathlib import Path

import yaml

from radreport.config import load_yaml
from radreport.errors import InputError

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

PHRASES = Path(__file__).with_name("phrases.yaml")
"""The vocabulary: mentions per observation, mentions that are not, other abnormal findings (regexes, as data)."""
_FRAGMENT = re.compile(r"<([A-Z_]+)>")


def load_phrases(path: Path = PHRASES) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """(mentions, not_mentions, other_findings) of a phrase file, fragments filled in, every regex compiled.

    A problem names the file and the entry (`mentions.Edema[2]: ...`), all of them at once."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{path}: {e}") from None
    sections = ("fragments", "mentions", "not_mentions", "other_findings")
    if not isinstance(data, dict) or set(data) != set(sections):
        raise InputError(f"{path}: must be a mapping with exactly the keys {', '.join(sections)}")
    problems: list[str] = []
    fragments = data["fragments"]
    if not isinstance(fragments, dict) or not all(isinstance(v, str) for v in fragments.values()):
        problems.append("fragments: must map NAME to a regular expression")
        fragments = {}
    for name, text in fragments.items():  # each one a regex by itself, named where it is wrong
        if _FRAGMENT.search(text):
            problems.append(f"fragments.{name}: a fragment cannot use another (<{_FRAGMENT.search(text)[1]}>)")
        else:
            try:
                re.compile(text)
            except re.error as e:
                problems.append(f"fragments.{name}: not a regular expression: {e}")

    def patterns(value, key: str) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            problems.append(f"{key}: must be a list of non-empty regular expressions")
            return []
        out = []
        for i, text in enumerate(value):
            if unknown := [n for n in _FRAGMENT.findall(text) if n not in fragments]:
                problems.append(f"{key}[{i}]: no fragment named {', '.join(unknown)}")
                continue
            out.append(_FRAGMENT.sub(lambda m: fragments[m[1]], text))
            try:
                re.compile(out[-1])
            except re.error as e:
                problems.append(f"{key}[{i}]: not a regular expression: {e}")
        return out

    tables = {}
    for section in ("mentions", "not_mentions"):
        table = data[section]
        if not isinstance(table, dict):
            problems.append(f"{section}: must map observations to lists of regular expressions")
            table = {}
        for obs in table:
            if obs not in OBSERVATIONS or obs == "No Finding":  # No Finding is decided from the others
                problems.append(f"{section}.{obs}: not one of the CheXpert observations a text mentions")
        tables[section] = {obs: patterns(v, f"{section}.{obs}") for obs, v in table.items()}
    absent = [o for o in OBSERVATIONS if o != "No Finding" and o not in tables["mentions"]]
    if absent and isinstance(data["mentions"], dict):  # it would never be labelled, and No Finding would say normal
        problems.append(f"mentions: no entry for {', '.join(absent)}")
    other = patterns(data["other_findings"], "other_findings")
    if problems:
        raise InputError(f"{path}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))
    return tables["mentions"], tables["not_mentions"], other


MENTIONS, NOT_MENTIONS, OTHER_FINDINGS = load_phrases()

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
