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


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# Each condition adds finding sentences, impression sentences and labels, and names the normal
# statements it replaces (heart, lungs, pleura, edema, bones).
def _effusion(r: random.Random, s: Study, prior: bool) -> set[str]:
    side = r.choice(SIDES + ("bilateral",))
    size = r.choice(SIZES)
    noun = "pleural effusions" if side == "bilateral" else "pleural effusion"
    change = r.choice(CHANGE) if prior else ""
    if change:
        s.findings.append(f"{_cap(size)} {side} {noun}, {change} compared to the prior study.")
        s.impression.append(f"{_cap(change)} {size} {side} {noun}.")
    else:
        s.findings.append(
            r.choice(
                [
                    f"There is a {size} {side} {noun}.",
                    f"{_cap(size)} {side} {noun} is seen.",
                    f"{_cap(size)} {side} {noun} with adjacent atelectasis.",
                ]
            )
        )
        s.impression.append(f"{_cap(size)} {side} {noun}.")
    s.labels["Pleural Effusion"] = "positive"
    return {"pleura"}


def _pneumothorax(r: random.Random, s: Study, prior: bool) -> set[str]:
    side, size = r.choice(SIDES), r.choice(("tiny", "small", "moderate", "apical"))
    s.findings.append(
        r.choice([f"There is a {size} {side} pneumothorax.", f"{_cap(size)} {side} pneumothorax is present."])
    )
    s.impression.append(f"{_cap(size)} {side} pneumothorax. Findings were discussed with Dr. ___ at ___ by telephone.")
    s.labels["Pneumothorax"] = "positive"
    return {"pleura"}


def _consolidation(r: random.Random, s: Study, prior: bool) -> set[str]:
    lobe = r.choice(LOBES)
    s.findings.append(
        r.choice(
            [
                f"There is focal consolidation in the {lobe}.",
                f"New opacity in the {lobe}.",
                f"Patchy airspace opacity is seen in the {lobe}.",
            ]
        )
    )
    if r.random() < 0.5:
        s.impression.append(f"{_cap(lobe)} consolidation concerning for pneumonia.")
        s.labels.update({"Consolidation": "positive", "Pneumonia": "uncertain"})
    else:
        s.impression.append(f"{_cap(lobe)} opacity may represent atelectasis or pneumonia.")
        s.labels.update({"Lung Opacity": "positive", "Pneumonia": "uncertain", "Atelectasis": "uncertain"})
    return {"lungs"}


def _atelectasis(r: random.Random, s: Study, prior: bool) -> set[str]:
    where = r.choice(("bibasilar", "left basilar", "right basilar"))
    s.findings.append(r.choice([f"{_cap(where)} opacities likely reflect atelectasis.", f"Mild {where} atelectasis."]))
    s.impression.append(f"{_cap(where)} atelectasis.")
    s.labels["Atelectasis"] = "positive"
    return {"lungs"}


def _cardiomegaly(r: random.Random, s: Study, prior: bool) -> set[str]:
    sev = r.choice(SEVERITY[:2])
    s.findings.append(
        r.choice(
            [
                f"The heart is {sev}ly enlarged.",
                f"There is {sev} cardiomegaly.",
                f"{_cap(sev)} enlargement of the cardiac silhouette is stable.",
            ]
        )
    )
    s.impression.append(f"{_cap(sev)} cardiomegaly.")
    s.labels["Cardiomegaly"] = "positive"
    return {"heart"}


def _edema(r: random.Random, s: Study, prior: bool) -> set[str]:
    sev = r.choice(SEVERITY)
    s.findings.append(
        r.choice(
            [f"There is {sev} pulmonary vascular congestion and interstitial edema.", f"{_cap(sev)} pulmonary edema."]
        )
    )
    s.impression.append(f"{_cap(sev)} pulmonary edema.")
    s.labels["Edema"] = "positive"
    return {"edema"}


def _devices(r: random.Random, s: Study, prior: bool) -> set[str]:
    kind = r.choice(("ett", "ngt", "line", "pacer"))
    if kind == "ett":
        cm = r.choice((1, 2, 3, 4, 5, 6))
        s.findings.append(f"Endotracheal tube terminates {cm} cm above the carina.")
        s.impression.append(
            "Endotracheal tube in standard position."
            if cm >= 3
            else f"Endotracheal tube terminates {cm} cm above the carina; recommend withdrawal by ___ cm."
        )
    elif kind == "ngt":
        s.findings.append("Nasogastric tube courses below the diaphragm with tip in the stomach.")
        s.impression.append("Nasogastric tube in appropriate position.")
    elif kind == "line":
        side = r.choice(SIDES)
        tip = r.choice(("mid SVC", "cavoatrial junction", "right atrium"))
        s.findings.append(f"{_cap(side)} internal jugular central venous catheter tip is in the {tip}.")
        s.impression.append(f"{_cap(side)} IJ line tip in the {tip}. No pneumothorax.")
        s.labels["Pneumothorax"] = "negative"
    else:
        s.findings.append("Left-sided pacemaker with leads in the right atrium and right ventricle.")
        s.impression.append("Pacemaker leads in standard position.")
    s.labels["Support Devices"] = "positive"
    return set()


def _nodule(r: random.Random, s: Study, prior: bool) -> set[str]:
    mm, lobe = r.choice((4, 6, 8, 11, 14)), r.choice(LOBES)
    s.findings.append(f"A {mm} mm nodule projects over the {lobe}.")
    s.impression.append(f"{mm} mm {lobe} nodule; recommend chest CT for further evaluation.")
    s.labels["Lung Lesion"] = "positive"
    return set()


def _fracture(r: random.Random, s: Study, prior: bool) -> set[str]:
    side, rib = r.choice(SIDES), r.choice(("fifth", "sixth", "seventh", "eighth"))
    if r.random() < 0.5:
        s.findings.append(f"Healed {side} rib fractures are noted.")
    else:
        s.findings.append(f"Acute displaced fracture of the {side} {rib} rib.")
        s.impression.append(f"Acute {side} {rib} rib fracture.")
        s.labels["Fracture"] = "positive"
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
