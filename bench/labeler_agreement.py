"""Agreement of our CheXpert labeler (eval/labeler.py) with the human MeSH coding of Indiana reports.

    python bench/labeler_agreement.py [--data ../shared/data/iu-xray/train.json]
        [--mesh ../shared/data/iu-xray/mesh.csv] [--out bench/results/labeler_agreement.json]

Each report's findings and impression are labelled together (the coders read both); its MeSH terms
are mapped to CheXpert observations by MESH_TO_CHEXPERT below. Uncertain labels count as positive
(the U-ones convention, as in the report); reports coded `No Indexing` are skipped. Prints
per-observation precision/recall/F1, micro-F1 over the 5 standard observations and over the 12
abnormal ones, and No Finding agreement; writes the same as JSON.

Targets (issue 12): micro-F1 >= 0.90 on the 5, >= 0.85 on the 12 abnormal observations.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.labeler import ABNORMAL, OBSERVATIONS, STANDARD_FIVE, is_positive, label  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from radreport.schema import load_examples  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "iu-xray"

# MeSH main term -> (qualifier that must be present, or None for any) -> CheXpert observation.
# The observations follow CheXpert's own definitions (its phrase lists): an interstitial pattern and
# parenchymal scarring are Lung Opacity, pleural scarring/thickening is Pleural Other, congestion is Edema.
MESH_TO_CHEXPERT: dict[str, list[tuple[str | None, str]]] = {
    "Pulmonary Atelectasis": [(None, "Atelectasis")],
    "Cardiomegaly": [(None, "Cardiomegaly")],
    "Cardiac Shadow": [("enlarged", "Cardiomegaly")],
    "Consolidation": [(None, "Consolidation")],
    "Pulmonary Edema": [(None, "Edema")],
    "Pulmonary Congestion": [(None, "Edema")],
    "Heart Failure": [(None, "Edema")],
    "Mediastinum": [("prominent", "Enlarged Cardiomediastinum"), ("enlarged", "Enlarged Cardiomediastinum")],
    "Fractures, Bone": [(None, "Fracture")],  # healed ones too: CheXpert's Fracture has no age
    "Nodule": [(None, "Lung Lesion")],
    "Mass": [(None, "Lung Lesion")],
    "Cavitation": [(None, "Lung Lesion")],  # CheXpert: "cavitary lesion"
    "Opacity": [(None, "Lung Opacity")],  # except over the mediastinum, ribs or heart: see map_term
    "Airspace Disease": [(None, "Lung Opacity")],
    "Infiltrate": [(None, "Lung Opacity")],
    "Density": [("lung", "Lung Opacity"), ("retrocardiac", "Lung Opacity")],  # round ones: see _map_term
    "Markings": [("interstitial", "Lung Opacity")],  # CheXpert: "interstitial marking"
    "Lung": [("interstitial", "Lung Opacity")],
    "Cicatrix": [(None, "Lung Opacity")],  # CheXpert: a "scar" is a Lung Opacity, a "pleural scar" Pleural Other
    "Thickening": [("pleura", "Pleural Other"), ("lung", "Lung Opacity")],  # interstitial/peribronchial thickening
    "Pulmonary Fibrosis": [(None, "Lung Opacity")],  # fibrosis is an interstitial opacity
    "Pleural Effusion": [(None, "Pleural Effusion")],
    "Hydropneumothorax": [(None, "Pleural Effusion"), (None, "Pneumothorax")],
    "Pneumonia": [(None, "Pneumonia")],
    "Pneumothorax": [(None, "Pneumothorax")],
    "Catheters, Indwelling": [(None, "Support Devices")],
    "Implanted Medical Device": [(None, "Support Devices")],
    "Medical Device": [(None, "Support Devices")],
    "Stents": [(None, "Support Devices")],
    "Tube, Inserted": [(None, "Support Devices")],
}
# Left unmapped, on purpose:
# - Calcified Granuloma, Granuloma, Granulomatous Disease, Calcinosis: healed granulomatous disease and
#   calcifications are benign findings, not a Lung Lesion (CheXpert's own labeler excludes "calcified nodule");
#   they do make a report not normal (No Finding below). For the same reason a Nodule coded together with a
#   Calcinosis or Granuloma term at the same place (how the coders write "calcified nodule") is left out.
# - Mediastinum/lymph nodes/enlarged: adenopathy, not a widened mediastinum.
# - Costophrenic Angle/blunted, Pleura/blunted: blunting is effusion or pleural thickening or scarring; the
#   coders kept it apart from both, so it is neither.
# - Surgical Instruments (mostly sternotomy wires and surgical clips), Foreign Bodies, Sutures, Breast Implants,
#   Spinal Fusion: not the lines, tubes and devices CheXpert's Support Devices means.
# - Lung/hyperdistention, Lung/hypoinflation, Emphysema, COPD, Diaphragm, Aorta, Spine, Thoracic Vertebrae,
#   Spondylosis, Scoliosis, Hernia, Hiatal, Technical Quality, Lucency, Shift, Volume Loss, Pulmonary Artery,
#   Lung/hilum (prominent/enlarged hila), Heart (small/obscured), Cardiac Shadow/irregular, Epicardial Fat:
#   not among the 14 CheXpert observations (CheXpert counts them only against No Finding).
# - Cysts (both in the humerus), Mastectomy, Pneumonectomy: not a chest observation of CheXpert's.


_SIZE_WORDS = {"small", "large", "multiple", "round", "scattered", "mild", "focal"}
_CALCIFIED = ("calcinosis", "calcified granuloma", "granuloma")


def map_term(term: str, others: list[str] = ()) -> set[str]:
    """One MeSH term (`Main/qualifier/...`) -> the CheXpert observations it codes (possibly none).
    `others` are the report's other terms (a nodule coded with a calcification at the same place is a calcified
    nodule, which CheXpert does not count as a Lung Lesion)."""
    main, *qualifiers = [p.strip().lower() for p in term.split("/")]
    where = set(qualifiers) - _SIZE_WORDS
    rules = {k.lower(): v for k, v in MESH_TO_CHEXPERT.items()}.get(main, [])
    in_lung = bool({"lung", "retrocardiac"} & set(qualifiers))
    if main == "density" and "round" in qualifiers and in_lung:
        return {"Lung Lesion"}  # a round density in the lung is what a report calls a nodular density
    if main == "opacity" and {"mediastinum", "ribs", "heart"} & set(qualifiers):
        return set()  # not in the lung
    if main == "cicatrix" and "pleura" in qualifiers:
        return {"Pleural Other"}
    if main == "mediastinum" and "lymph nodes" in qualifiers:
        return set()  # adenopathy, not a wide mediastinum
    if main == "nodule":
        for other in others:
            o_main, *o_qualifiers = [p.strip().lower() for p in other.split("/")]
            if o_main in _CALCIFIED and where <= set(o_qualifiers) - _SIZE_WORDS:
                return set()
    out = set()
    for qualifier, observation in rules:
        if qualifier is None or qualifier in qualifiers:
            out.add(observation)
    if main == "opacity" and "round" in qualifiers and in_lung:
        out.add("Lung Lesion")  # a nodular opacity: CheXpert counts it as a Lung Lesion too
    return out


def reference_labels(mesh: str) -> tuple[set[str], bool]:
    """(observations coded, whether the coders called the report normal)."""
    terms = [t.strip() for t in mesh.split(";") if t.strip()]
    if [t.lower() for t in terms] == ["normal"]:
        return set(), True
    return set().union(*(map_term(t, terms) for t in terms)) if terms else set(), False


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": tp + fn, "tp": tp}


def measure(pairs: list[tuple[str, str, str]], uncertain_positive: bool = True) -> dict:
    """pairs: (study_id, report text, MeSH string) -> agreement numbers."""
    tp = {o: 0 for o in OBSERVATIONS}
    fp, fn = dict(tp), dict(tp)
    nf = {"both": 0, "neither": 0, "labeler_only": 0, "coders_only": 0}
    disagreements: dict[str, dict[str, list[str]]] = {o: {"fp": [], "fn": []} for o in OBSERVATIONS}
    for sid, text, mesh in pairs:
        ref, ref_normal = reference_labels(mesh)
        states = label(text)
        for o in OBSERVATIONS:
            if o == "No Finding":
                continue
            got = is_positive(states[o]) if uncertain_positive else states[o] == "positive"
            want = o in ref
            tp[o] += got and want
            fp[o] += got and not want
            fn[o] += want and not got
            if got != want:
                disagreements[o]["fp" if got else "fn"].append(sid)
        got_nf = states["No Finding"] == "positive"
        key = {(True, True): "both", (False, False): "neither", (True, False): "labeler_only"}.get(
            (got_nf, ref_normal), "coders_only"
        )
        nf[key] += 1
    per = {o: prf(tp[o], fp[o], fn[o]) for o in OBSERVATIONS if o != "No Finding"}

    def micro(obs):
        return prf(sum(tp[o] for o in obs), sum(fp[o] for o in obs), sum(fn[o] for o in obs))["f1"]

    n = len(pairs)
    return {
        "reports": n,
        "uncertain_counts_as_positive": uncertain_positive,
        "per_observation": per,
        "micro_f1_standard_five": micro(STANDARD_FIVE),
        "micro_f1_abnormal": micro(ABNORMAL),
        "no_finding": {
            **nf,
            "agreement_with_mesh_normal": (nf["both"] + nf["neither"]) / n,
            "precision": nf["both"] / (nf["both"] + nf["labeler_only"]) if nf["both"] + nf["labeler_only"] else 0.0,
            "recall": nf["both"] / (nf["both"] + nf["coders_only"]) if nf["both"] + nf["coders_only"] else 0.0,
        },
        "disagreements": disagreements,
    }


def load_pairs(data: Path, mesh: Path) -> list[tuple[str, str, str]]:
    texts = {e.study_id: f"{e.findings} {e.impression}" for e in load_examples(data)}
    with open(mesh, newline="", encoding="utf-8") as f:
        coded = {r["uid"]: r["MeSH"] for r in csv.DictReader(f)}
    return [
        (sid, texts[sid], coded[sid])
        for sid in sorted(texts, key=lambda s: int(s) if s.isdigit() else s)
        if sid in coded and coded[sid].strip().lower() != "no indexing"
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SHARED / "train.json")
    p.add_argument("--mesh", type=Path, default=SHARED / "mesh.csv")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/labeler_agreement.json")
    p.add_argument("--uncertain-negative", action="store_true", help="count uncertain labels as negative (U-zeros)")
    p.add_argument("--show", metavar="OBSERVATION", help="print the study ids the labeler and coders disagree on")
    a = p.parse_args()
    pairs = load_pairs(a.data, a.mesh)
    result = measure(pairs, uncertain_positive=not a.uncertain_negative)
    convention = "negative" if a.uncertain_negative else "positive"
    print(f"{len(pairs)} reports (No Indexing skipped); uncertain counts as {convention}")
    print(f"{'observation':<28} {'support':>7} {'precision':>9} {'recall':>7} {'F1':>7}")
    for o, v in result["per_observation"].items():
        print(f"{o:<28} {v['support']:>7} {v['precision']:>9.3f} {v['recall']:>7.3f} {v['f1']:>7.3f}")
    print(f"micro-F1, 5 standard observations:   {result['micro_f1_standard_five']:.3f}  (target >= 0.90)")
    print(f"micro-F1, 12 abnormal observations:  {result['micro_f1_abnormal']:.3f}  (target >= 0.85)")
    nf = result["no_finding"]
    print(
        f"No Finding vs MeSH 'normal': agreement {nf['agreement_with_mesh_normal']:.3f} "
        f"(precision {nf['precision']:.3f}, recall {nf['recall']:.3f})"
    )
    if a.show:
        d = result["disagreements"][a.show]
        print(f"{a.show}: labeler only {d['fp']}\n{a.show}: coders only {d['fn']}")
    result["command"] = " ".join(["python", *sys.argv])
    atomic_write_json(a.out, result)


if __name__ == "__main__":
    main()
