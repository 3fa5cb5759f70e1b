"""Split radiology reports into sections, and make a MEDIQA 2021 Task 3 row's text from a MIMIC-CXR report.

MIMIC-CXR (free text)
---------------------
The MEDIQA 2021 Task 3 data were made by the organisers' `make_mimic_data.py` (github.com/abachaa/MEDIQA2021,
Task3/), whose section parser is MIMIC-CXR's own `section_parser.py` (github.com/MIT-LCP/mimic-cxr, txt/).
`mediqa_text` gives exactly the findings, impression and background text that script writes, so our
training targets and dev references are the reference's. Written from a reading of those scripts; what
they do, and so what we do:

Section headers. A header is a line break, one space, then upper-case letters, spaces and `( ) / , -`,
a colon and one whitespace character (`"\\n FINDINGS: "`, `"\\n  CHEST, PA AND LATERAL:\\n"`). So these are
*not* headers: one in the first line of the text (nothing before it), one at column 0 (`"\\nFINDINGS:"`), a
mixed-case one (`"Findings:"`), one with digits, `.` or `&`, and a trailing one with nothing after its
colon (its words stay in the section before). A section runs from just after its header to the line break
that starts the next header; the text before the first header is the `preamble` (a report without any
header is one `full report` section).

Section names. The header, lower-cased and stripped, is looked up in a table of spellings seen in
MIMIC-CXR, typing errors included (`_SPELLINGS`: "CONCLUSION" and "FINDINGS AND IMPRESSION" are the
impression, "IMPRESSON" too, and - a quirk we keep - "NDICATION"); failing that, the first of impression,
findings, history, comparison, addendum that it contains names it ("IMPRESSIONS", "FINDINGS AND
RECOMMENDATIONS" -> findings); failing that, a header that names a view ("chest", "portable", "pa and
lat", "two views", "ribs", ... `_VIEW_WORDS`) is findings. Other headers keep their own lower-cased name.

Which section wins. Findings and impression sections with only whitespace are dropped; of the rest, the
*first* findings and the *first* impression are used (MIMIC-CXR's own `create_section_files.py` takes the
last; MEDIQA takes the first, and so do we). A wet read before FINAL REPORT is text like any other: an
impression header in it (`"\\n  IMPRESSION: ..."`) is the first impression, and its text is part of the
background. A report without a (non-empty) findings or impression has no MEDIQA row: the reference script
stops with a ValueError on it (the MEDIQA split lists only reports that have both); `mediqa_text` raises
`MissingSection` naming which one is missing.

Text. Findings: stripped, line breaks *deleted* (not replaced: MIMIC's continuation lines start with a
space, so words stay apart; a line that starts at column 0 is joined to the word before it), then every run
of two or more whitespace characters becomes one space. Impression: the same, and before the collapsing,
list numbers go: a single digit, a dot and whitespace at the very start (`"1. "`), or with whitespace
before it anywhere else (`" 2. "` -> `" "`). Numbers that are not list markers stay: `"10. "` (two digits),
`"2.5 cm"` (no whitespace after the dot), `"T12."`, `"12/3/2019"`. Quirks of those rules we keep: a single
digit ending a sentence goes too (`"rib 5. No effusion."` -> `"rib No effusion."`), of two markers in a row
only the first goes (`" 2. 3. x"` -> `" 3. x"`), and a line break deleted before a number hides it
(`"effusion.\\n2. Edema"` -> `"effusion.2. Edema"`). Background: the report up to the start of the
findings text, stripped; a leading "FINAL REPORT" removed (only when it leads: not after a wet read); the
findings header removed as its last space-separated word ("CHEST, PA AND LATERAL:" loses only "LATERAL:",
and a background that is nothing but "FINDINGS:" keeps "FINDINGS": the reference cuts at `rfind(" ")`,
which is -1 there); runs of whitespace collapsed; line breaks deleted.

Not reproduced: the parser's `last_paragraph` section (made only when a report has neither findings nor
impression, so never part of a MEDIQA row) and MIMIC-CXR's per-study `custom_mimic_cxr_rules`, which
`make_mimic_data.py` does not use either. No deliberate difference in the text.

Open-i (Indiana)
----------------
`ecgen-radiology` XML with `AbstractText Label=...`; MEDIQA's Indiana dev set keeps its list numbers, so
nothing is removed there.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# "\n " + upper-case name + ":" + one whitespace character. The name may carry further leading spaces.
HEADER = re.compile(r"\n (?P<header>[A-Z ()/,-]+):\s")

# canonical name -> the header spellings (lower case) that mean it, typing errors as found in MIMIC-CXR
_SPELLINGS_BY_NAME: dict[str, tuple[str, ...]] = {
    "impression": (
        "impression",
        "conclusion",
        "findings and impression",
        "findings/impression",
        "findings/ impression",
        "impresson",
        "imprression",
        "imoression",
        "impressoin",
        "imprssion",
        "impresion",
        "imperssion",
        "mpression",
        "impession",
        "ndication",  # sic: in the reference's table, so one such report's "indication" is its impression
    ),
    "findings": (
        "findings",
        "finding",
        "chest, two views",
        "reference findings",
        "findins",
        "findindgs",
        "findgings",
        "findngs",
        "findnings",
        "finidngs",
    ),
    "indication": ("indication", "reason for examination", "reason for exam", "clinical indication", "idication"),
    "history": ("history", "clinical history", "clinical information", "patient history", "pfi"),
    "comparison": (
        "comparison",
        "comparisons",
        "reference exam",
        "comparison exam",
        "comparison film",
        "comparision",
        "comparsion",
        "comparrison",
        "comparisions",
    ),
    "examination": ("examination", "exam", "type of examination"),
    "technique": ("technique",),
    "notification": ("notification",),
    "recommendations": ("recommendations", "recommendation", "recommendation(s)"),
    "addendum": ("addendum",),
    "wet read": ("wet read", "wetread"),
    "date": ("date",),
    "comment": ("comment",),
    "preamble": ("preamble",),
}
_SPELLINGS = {spelling: name for name, spellings in _SPELLINGS_BY_NAME.items() for spelling in spellings}
# An unlisted header containing one of these is that section; the first in this order wins.
_CONTAINED_NAMES = ("impression", "findings", "history", "comparison", "addendum")
# An unlisted header naming a view of the study ("PORTABLE AP CHEST") introduces the findings.
_VIEW_WORDS = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|"
    "frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|"
    "ribs|pa and lat"
)

# MEDIQA's list-number rules (see the module docstring): ASCII digits only, one digit.
_LEADING_LIST_NUMBER = re.compile(r"^[0-9]\.\s+")
_INNER_LIST_NUMBER = re.compile(r"\s[0-9]\.\s+")
_WHITESPACE_RUN = re.compile(r"\s{2,}")


@dataclass(frozen=True)
class Section:
    name: str  # canonical name: "findings", "impression", "indication", ..., or the header lower-cased
    header: str  # as written, without the colon and surrounding spaces; "" for preamble / full report
    start: int  # offset in the report where the section's text starts (just after its header)
    text: str  # the raw text, up to the line break that starts the next header


@dataclass(frozen=True)
class MediqaText:
    findings: str
    impression: str
    background: str


class MissingSection(ValueError):
    """The report has no non-empty findings or impression section, so no MEDIQA row."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__(f"no {' and no '.join(s.upper() for s in missing)} section")


def section_name(header: str) -> str:
    """Canonical name of a MIMIC-CXR header (without its colon)."""
    name = header.lower().strip()
    if name in _SPELLINGS:
        return _SPELLINGS[name]
    for contained in _CONTAINED_NAMES:
        if contained in name:
            return contained
    return "findings" if _VIEW_WORDS.search(name) else name


def split_sections(report: str) -> list[Section]:
    """A free-text MIMIC-CXR report -> its sections in report order, raw text untouched.

    Findings and impression sections holding only whitespace are left out."""
    headers = list(HEADER.finditer(report))
    if not headers:
        return [Section("full report", "", 0, report)]
    sections = [Section("preamble", "", 0, report[: headers[0].start("header")])]
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(report)
        sections.append(Section(section_name(h["header"]), h["header"].strip(), h.end(), report[h.end() : end]))
    return [s for s in sections if not (s.name in ("findings", "impression") and not s.text.strip())]


def _one_line(text: str) -> str:
    """Strip, delete line breaks (MIMIC continuation lines start with a space)."""
    return text.strip().replace("\n", "")


def clean_findings(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", _one_line(text))


def clean_impression(text: str) -> str:
    text = _LEADING_LIST_NUMBER.sub("", _one_line(text))
    text = _INNER_LIST_NUMBER.sub(" ", text)
    return _WHITESPACE_RUN.sub(" ", text)


def clean_background(text: str) -> str:
    """The report text before the findings body -> MEDIQA's background (see the module docstring)."""
    text = text.strip()
    if text.startswith("FINAL REPORT"):
        text = text[len("FINAL REPORT") :].lstrip()
    if text.endswith(":"):  # the findings header itself: drop its last word (all of it when it has no space)
        text = text[: text.rfind(" ")].rstrip()
    return _WHITESPACE_RUN.sub(" ", text).strip().replace("\n", "")


def mediqa_text(report: str) -> MediqaText:
    """A MIMIC-CXR report -> the (findings, impression, background) text of its MEDIQA 2021 row.

    Raises MissingSection when it has no non-empty findings or impression section."""
    sections = split_sections(report)
    findings = next((s for s in sections if s.name == "findings"), None)
    impression = next((s for s in sections if s.name == "impression"), None)
    if findings is None or impression is None:
        raise MissingSection([name for name, s in (("findings", findings), ("impression", impression)) if s is None])
    return MediqaText(
        findings=clean_findings(findings.text),
        impression=clean_impression(impression.text),
        background=clean_background(report[: findings.start]),
    )


def normalize_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_openi_xml(path: str | Path) -> dict[str, str]:
    """Open-i `ecgen-radiology` XML -> {uid, indication, comparison, findings, impression}.

    `uid` is the `<uId id=...>` value, "" when the record has none. Raises ValueError (malformed XML)
    or OSError (unreadable file)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}:{e.position[0]}: malformed XML ({e})") from None
    out: dict[str, str] = {}
    uid = root.find(".//uId")
    out["uid"] = (uid.get("id") or "").strip() if uid is not None else ""
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        if label:
            out[label] = normalize_whitespace("".join(node.itertext()))
    return out
