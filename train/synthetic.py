"""Deterministic synthetic chest X-ray reports: the bundled sample data.

Written by this project, never copied from a credentialed dataset. Each study draws a few
conditions (effusion, pneumothorax, consolidation, atelectasis, cardiomegaly, edema, devices,
nodules, fractures) with laterality, severity and change since a prior; findings state the
positives and negate the rest; the impression summarises the positives the way radiologists do,
and normal studies get one of several wordings (as real radiologists disagree on wording).

    python -m train.synthetic --out data/sample

writes the MEDIQA-form train/dev1/dev2 JSON files, a MIMIC-style reports zip with its split CSV,
and Open-i XML files for the prepare tests. The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from radreport.io import atomic_write_bytes, atomic_write_text
from radreport.schema import Example, write_examples

SIDES = ("left", "right")
SEVERITY = ("mild", "moderate", "severe")
SIZES = ("small", "moderate", "large")
LOBES = ("right lower lobe", "left lower lobe", "right middle lobe", "lingula", "right upper lobe", "left upper lobe")
CHANGE = ("unchanged", "increased", "decreased")
INDICATIONS = (
    "cough",
    "shortness of breath",
    "fever",
    "chest pain",
    "hypoxia",
    "evaluate for pneumonia",
    "s/p line placement",
    "fall",
    "post-operative",
    "dyspnea on exertion",
    "tachycardia",
)


@dataclass
class Study:
    """One synthetic study: report parts plus the true labels (CheXpert names -> state)."""

    findings: list[str] = field(default_factory=list)
    impression: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    indication: str = ""
    comparison: str = "None."

    def state(self, finding: str, impression: str = "", labels: dict[str, str] | None = None) -> None:
        """One condition: its sentence in the findings, its summary in the impression (if any), its labels."""
        self.findings.append(finding)
        if impression:
            self.impression.append(impression)
        self.labels.update(labels or {})


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# Each condition states its finding (one of several wordings), the impression's summary of it and its true
# labels, and names the normal statements it replaces (heart, lungs, pleura, edema, bones).
def _effusion(r: random.Random, s: Study, prior: bool) -> set[str]:
    side = r.choice(SIDES + ("bilateral",))
    size = r.choice(SIZES)
    noun = "pleural effusions" if side == "bilateral" else "pleural effusion"
    change = r.choice(CHANGE) if prior else ""
    positive = {"Pleural Effusion": "positive"}
    if change:
        s.state(
            f"{_cap(size)} {side} {noun}, {change} compared to the prior study.",
            f"{_cap(change)} {size} {side} {noun}.",
            positive,
        )
        return {"pleura"}
    wordings = (
        f"There is a {size} {side} {noun}.",
        f"{_cap(size)} {side} {noun} is seen.",
        f"{_cap(size)} {side} {noun} with adjacent atelectasis.",
    )
    s.state(r.choice(wordings), f"{_cap(size)} {side} {noun}.", positive)
    return {"pleura"}


def _pneumothorax(r: random.Random, s: Study, prior: bool) -> set[str]:
    side, size = r.choice(SIDES), r.choice(("tiny", "small", "moderate", "apical"))
    finding = r.choice([f"There is a {size} {side} pneumothorax.", f"{_cap(size)} {side} pneumothorax is present."])
    discussed = "Findings were discussed with Dr. ___ at ___ by telephone."
    s.state(finding, f"{_cap(size)} {side} pneumothorax. {discussed}", {"Pneumothorax": "positive"})
    return {"pleura"}


def _consolidation(r: random.Random, s: Study, prior: bool) -> set[str]:
    lobe = r.choice(LOBES)
    finding = r.choice(
        [
            f"There is focal consolidation in the {lobe}.",
            f"New opacity in the {lobe}.",
            f"Patchy airspace opacity is seen in the {lobe}.",
        ]
    )
    if r.random() < 0.5:
        s.state(
            finding,
            f"{_cap(lobe)} consolidation concerning for pneumonia.",
            {"Consolidation": "positive", "Pneumonia": "uncertain"},
        )
    else:
        labels = {"Lung Opacity": "positive", "Pneumonia": "uncertain", "Atelectasis": "uncertain"}
        s.state(finding, f"{_cap(lobe)} opacity may represent atelectasis or pneumonia.", labels)
    return {"lungs"}


def _atelectasis(r: random.Random, s: Study, prior: bool) -> set[str]:
    where = r.choice(("bibasilar", "left basilar", "right basilar"))
    finding = r.choice([f"{_cap(where)} opacities likely reflect atelectasis.", f"Mild {where} atelectasis."])
    s.state(finding, f"{_cap(where)} atelectasis.", {"Atelectasis": "positive"})
    return {"lungs"}


def _cardiomegaly(r: random.Random, s: Study, prior: bool) -> set[str]:
    sev = r.choice(SEVERITY[:2])
    wordings = (
        f"The heart is {sev}ly enlarged.",
        f"There is {sev} cardiomegaly.",
        f"{_cap(sev)} enlargement of the cardiac silhouette is stable.",
    )
    s.state(r.choice(wordings), f"{_cap(sev)} cardiomegaly.", {"Cardiomegaly": "positive"})
    return {"heart"}


def _edema(r: random.Random, s: Study, prior: bool) -> set[str]:
    sev = r.choice(SEVERITY)
    finding = r.choice(
        [f"There is {sev} pulmonary vascular congestion and interstitial edema.", f"{_cap(sev)} pulmonary edema."]
    )
    s.state(finding, f"{_cap(sev)} pulmonary edema.", {"Edema": "positive"})
    return {"edema"}


def _devices(r: random.Random, s: Study, prior: bool) -> set[str]:
    kind = r.choice(("ett", "ngt", "line", "pacer"))
    device = {"Support Devices": "positive"}
    if kind == "ett":
        cm = r.choice((1, 2, 3, 4, 5, 6))
        too_low = f"Endotracheal tube terminates {cm} cm above the carina; recommend withdrawal by ___ cm."
        impression = "Endotracheal tube in standard position." if cm >= 3 else too_low
        s.state(f"Endotracheal tube terminates {cm} cm above the carina.", impression, device)
    elif kind == "ngt":
        s.state(
            "Nasogastric tube courses below the diaphragm with tip in the stomach.",
            "Nasogastric tube in appropriate position.",
            device,
        )
    elif kind == "line":
        side = r.choice(SIDES)
        tip = r.choice(("mid SVC", "cavoatrial junction", "right atrium"))
        finding = f"{_cap(side)} internal jugular central venous catheter tip is in the {tip}."
        s.state(
            finding, f"{_cap(side)} IJ line tip in the {tip}. No pneumothorax.", {"Pneumothorax": "negative", **device}
        )
    else:
        s.state(
            "Left-sided pacemaker with leads in the right atrium and right ventricle.",
            "Pacemaker leads in standard position.",
            device,
        )
    return set()


def _nodule(r: random.Random, s: Study, prior: bool) -> set[str]:
    mm, lobe = r.choice((4, 6, 8, 11, 14)), r.choice(LOBES)
    impression = f"{mm} mm {lobe} nodule; recommend chest CT for further evaluation."
    s.state(f"A {mm} mm nodule projects over the {lobe}.", impression, {"Lung Lesion": "positive"})
    return set()


def _fracture(r: random.Random, s: Study, prior: bool) -> set[str]:
    side, rib = r.choice(SIDES), r.choice(("fifth", "sixth", "seventh", "eighth"))
    if r.random() < 0.5:
        s.state(f"Healed {side} rib fractures are noted.")  # old and incidental: not in the impression, not coded
    else:
        s.state(
            f"Acute displaced fracture of the {side} {rib} rib.",
            f"Acute {side} {rib} rib fracture.",
            {"Fracture": "positive"},
        )
    return {"bones"}


CONDITIONS = (
    _effusion,
    _pneumothorax,
    _consolidation,
    _atelectasis,
    _cardiomegaly,
    _edema,
    _devices,
    _nodule,
    _fracture,
)

NORMAL = {
    "heart": (
        "The heart size is normal.",
        "Cardiomediastinal silhouette is within normal limits.",
        "Heart size is normal. Mediastinal and hilar contours are unremarkable.",
    ),
    "lungs": (
        "The lungs are clear.",
        "Lungs are clear without focal consolidation.",
        "No focal consolidation is seen.",
    ),
    "pleura": (
        "No pleural effusion or pneumothorax.",
        "There is no pleural effusion or pneumothorax.",
        "No pleural effusion is seen. There is no pneumothorax.",
    ),
    "edema": ("No pulmonary edema.", "Pulmonary vasculature is normal.", "There is no evidence of pulmonary edema."),
    "bones": ("Osseous structures are intact.", "No acute osseous abnormality.", ""),
}
NORMAL_IMPRESSION_MIMIC = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "Normal chest radiograph.",
)
NORMAL_IMPRESSION_INDIANA = (
    "No acute cardiopulmonary disease.",
    "No active disease.",
    "No acute cardiopulmonary abnormality.",
    "Negative chest x-____.",
)


def make_study(r: random.Random, style: str = "mimic") -> Study:
    """One study; `style` is 'mimic' or 'indiana' (shorter, other normal wordings, `____`)."""
    s = Study(indication=f"___ year old {r.choice(('man', 'woman'))} with {r.choice(INDICATIONS)}")
    prior = r.random() < 0.5
    if prior:
        s.comparison = "___" if style == "mimic" else "____"
    n_abnormal = 0 if r.random() < 0.45 else r.choice((1, 1, 1, 2, 2, 3))
    replaced: set[str] = set()
    for cond in r.sample(CONDITIONS, n_abnormal):
        replaced |= cond(r, s, prior)
    if prior and n_abnormal and r.random() < 0.3:
        s.findings.insert(0, "Compared to the prior study from ___, there is little interval change.")
    for organ in ("heart", "lungs", "pleura", "edema", "bones"):
        if organ not in replaced:
            sentence = r.choice(NORMAL[organ])
            if sentence:
                s.findings.append(sentence)
    if not s.impression:
        s.impression.append(r.choice(NORMAL_IMPRESSION_MIMIC if style == "mimic" else NORMAL_IMPRESSION_INDIANA))
        if not s.labels:
            s.labels["No Finding"] = "positive"
    if style == "indiana":
        s.findings = [f.replace("___", "____") for f in s.findings]
        s.impression = [i.replace("___", "____") for i in s.impression]
    return s


def to_example(s: Study, study_id: str, subject_id: str) -> Example:
    background = f"INDICATION: {s.indication} COMPARISON: {s.comparison}"
    return Example(
        study_id=study_id,
        subject_id=subject_id,
        findings=" ".join(s.findings),
        impression=" ".join(s.impression),
        background=background,
    )


def _wrap(text: str) -> str:
    return "\n".join(" " + line for line in textwrap.wrap(text, 70))


def _numbered(items: list[str]) -> str:
    """A numbered list as radiologists write impressions: `1. ...` on its own line, wrapped lines indented."""
    return "\n".join(_wrap(f"{k}. {item}") for k, item in enumerate(items, 1))


def mimic_report_text(
    s: Study,
    r: random.Random,
    findings: bool = True,
    impression: bool = True,
    numbered: bool = False,
    notification: bool = False,
) -> str:
    """A free-text report laid out like MIMIC-CXR's, header spellings varied as in real reports.

    `numbered`: the impression as a numbered list (MEDIQA's preparation removes the numbers);
    `notification`: a NOTIFICATION section after the impression. Neither draws from `r`."""
    impression_header = r.choice(("IMPRESSION:", "IMPRESSION:", "IMPRESSION:", "CONCLUSION:"))
    history_header = r.choice(("INDICATION:", "INDICATION:", "HISTORY:", "CLINICAL HISTORY:"))
    parts = [
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        "",
        f" {history_header}  {s.indication}",
        "",
        " TECHNIQUE:  Chest PA and lateral",
        "",
        f" COMPARISON:  {s.comparison}",
        "",
    ]
    if findings:
        parts += [" FINDINGS: ", "", _wrap(" ".join(s.findings)), ""]
    if impression:
        parts += [
            f" {impression_header} ",
            "",
            _numbered(s.impression) if numbered else _wrap(" ".join(s.impression)),
            "",
        ]
    if notification:
        parts += [" NOTIFICATION:  The findings were discussed with Dr. ___ by telephone at 2:15 PM on ___.", ""]
    text = "\n".join(parts)
    if r.random() < 0.1:  # some reports start with a wet read before the final report
        text = "WET READ: ___ ___ 5:12 PM\n  preliminary read, see final.\n\n" + text
    return text


def openi_xml(s: Study, uid: int, findings: bool = True) -> str:
    """An Open-i `ecgen-radiology` record (Open-i writes de-identified spans as XXXX)."""

    def t(text: str) -> str:
        return escape(text.replace("____", "XXXX").replace("___", "XXXX"))

    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="CXR{uid}"/>
  <pmcId id="{uid}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
    <Article PubModel="Electronic">
      <ArticleTitle>Indiana University Chest X-ray Collection (synthetic sample)</ArticleTitle>
      <Abstract>
        <AbstractText Label="COMPARISON">{t(s.comparison)}</AbstractText>
        <AbstractText Label="INDICATION">{t(s.indication)}</AbstractText>
        <AbstractText Label="FINDINGS">{t(" ".join(s.findings)) if findings else ""}</AbstractText>
        <AbstractText Label="IMPRESSION">{t(" ".join(s.impression))}</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
</eCitation>
"""


# Counts of the bundled sample; the prepare tests check that prepare reproduces them.
SAMPLE_COUNTS = {
    "train": 3000,
    "dev1": 300,
    "dev2": 300,
    "zip_train": 48,
    "zip_dev": 12,
    "zip_incomplete": 4,
    "openi": 10,
    "openi_without_findings": 2,
}


def mimic_ids(r: random.Random) -> tuple[str, str]:
    subject = r.randrange(10_000_000, 19_999_999)
    study = r.randrange(50_000_000, 59_999_999)
    return str(study), str(subject)


def write_sample(out: Path, seed: int = 0) -> dict[str, int]:
    r = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    n = SAMPLE_COUNTS
    write_examples(out / "train.json", [to_example(make_study(r), *mimic_ids(r)) for _ in range(n["train"])])
    write_examples(out / "dev1.json", [to_example(make_study(r), *mimic_ids(r)) for _ in range(n["dev1"])])
    write_examples(
        out / "dev2.json", [to_example(make_study(r, "indiana"), str(i), "") for i in range(1, n["dev2"] + 1)]
    )

    # MIMIC-style zip (files/pXX/pSUBJECT/sSTUDY.txt) and the MEDIQA split CSV listing only the
    # studies that have both sections, as the real split does.
    zbuf, rows = io.BytesIO(), []
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        total = n["zip_train"] + n["zip_dev"] + n["zip_incomplete"]
        for i in range(total):
            study, subject = mimic_ids(r)
            incomplete = i >= n["zip_train"] + n["zip_dev"]
            study_text = make_study(r)
            text = mimic_report_text(
                study_text,
                r,
                findings=not (incomplete and i % 2),
                impression=not incomplete or i % 2,
                numbered=len(study_text.impression) > 1 and i % 3 != 2,
                notification=i % 5 == 1,
            )
            info = zipfile.ZipInfo(f"files/p{subject[:2]}/p{subject}/s{study}.txt", date_time=(2019, 1, 1, 0, 0, 0))
            z.writestr(info, text)
            if not incomplete:
                rows.append((study, subject, "train" if i < n["zip_train"] else "dev"))
    atomic_write_bytes(out / "mimic" / "mimic-cxr-reports.zip", zbuf.getvalue())
    sbuf = io.StringIO()
    w = csv.writer(sbuf, lineterminator="\n")
    w.writerow(("study_id", "subject_id", "split"))
    w.writerows(rows)
    atomic_write_text(out / "mimic" / "mimic_split_train_dev.csv", sbuf.getvalue())

    for uid in range(1, n["openi"] + 1):
        s = make_study(r, "indiana")
        atomic_write_text(out / "openi" / f"{uid}.xml", openi_xml(s, uid, findings=uid > n["openi_without_findings"]))
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/sample"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    counts = write_sample(args.out, args.seed)
    print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
