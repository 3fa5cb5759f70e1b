"""Split radiology reports into sections.

MIMIC-CXR free text: an optional wet read, `FINAL REPORT`, then `HEADER:` sections. Header
spellings vary between radiologists and years (IMPRESSION / IMPRESSIONS / CONCLUSION / SUMMARY,
INDICATION / HISTORY / CLINICAL HISTORY / REASON FOR EXAM, ...); each is mapped to one canonical
name. Open-i (Indiana) reports come as `ecgen-radiology` XML with `AbstractText Label=...`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

# canonical name -> header spellings seen in real reports (upper case, without the colon)
HEADER_VARIANTS: dict[str, tuple[str, ...]] = {
    "examination": ("EXAMINATION", "EXAM", "STUDY", "PROCEDURE", "TYPE OF EXAMINATION"),
    "indication": (
        "INDICATION",
        "INDICATIONS",
        "HISTORY",
        "CLINICAL HISTORY",
        "CLINICAL INDICATION",
        "REASON FOR EXAM",
        "REASON FOR EXAMINATION",
        "CLINICAL INFORMATION",
    ),
    "technique": ("TECHNIQUE", "TECHNIQUES", "VIEWS"),
    "comparison": ("COMPARISON", "COMPARISONS", "PRIOR", "PRIOR STUDIES", "COMPARISON STUDY"),
    "findings": (
        "FINDINGS",
        "FINDING",
        "REPORT",
        "PA AND LATERAL VIEWS OF THE CHEST",
        "PORTABLE VIEW OF THE CHEST",
        "SINGLE PORTABLE VIEW OF THE CHEST",
    ),
    "impression": (
        "IMPRESSION",
        "IMPRESSIONS",
        "CONCLUSION",
        "CONCLUSIONS",
        "SUMMARY",
        "IMPRESSION AND RECOMMENDATIONS",
        "IMPRESSION AND RECOMMENDATION",
        "RECOMMENDATIONS",
        "RECOMMENDATION",
    ),
    "findings_and_impression": ("FINDINGS AND IMPRESSION", "FINDINGS/IMPRESSION", "IMPRESSION AND FINDINGS"),
    "notification": ("NOTIFICATION", "COMMUNICATION"),
}
_CANONICAL = {v: k for k, vs in HEADER_VARIANTS.items() for v in vs}
# A header starts a line and ends with a colon; the body may follow on the same line.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]{1,60}?)[ \t]*:[ \t]*", re.MULTILINE)
_FINAL_REPORT = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.MULTILINE)


def normalize_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_report_sections(text: str) -> dict[str, str]:
    """Free-text MIMIC-CXR report -> {canonical section name: text with whitespace collapsed}.

    Text before `FINAL REPORT` (the wet read) is dropped. Text before the first header is kept as
    `preamble`. Unknown headers keep their own lower-cased name. A repeated section is appended.
    """
    m = _FINAL_REPORT.search(text)
    if m:
        text = text[m.end() :]
    sections: dict[str, str] = {}
    headers = [h for h in _HEADER.finditer(text)]
    start_of_first = headers[0].start() if headers else len(text)
    preamble = normalize_whitespace(text[:start_of_first])
    if preamble:
        sections["preamble"] = preamble
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        raw_name = re.sub(r"\s+", " ", h.group(1).strip())
        name = _CANONICAL.get(raw_name, raw_name.lower())
        body = normalize_whitespace(text[h.end() : end])
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def findings_and_impression(sections: dict[str, str]) -> tuple[str, str]:
    """The (findings, impression) pair a MEDIQA row is made of; empty strings where absent."""
    return sections.get("findings", ""), sections.get("impression", "")


def background_of(sections: dict[str, str]) -> str:
    """Everything a radiologist reads besides findings: indication, technique, comparison."""
    parts = [
        f"{name.upper()}: {sections[name]}" for name in ("indication", "technique", "comparison") if sections.get(name)
    ]
    return " ".join(parts)


def parse_openi_xml(path: str | Path) -> dict[str, str]:
    """Open-i `ecgen-radiology` XML -> {uid, indication, comparison, findings, impression}."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}:{e.position[0]}: malformed XML ({e})") from None
    out: dict[str, str] = {}
    uid = root.find(".//uId")
    out["uid"] = uid.get("id", "") if uid is not None else Path(path).stem
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        if label:
            out[label] = normalize_whitespace("".join(node.itertext()))
    return out
