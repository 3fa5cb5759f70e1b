"""The report, regenerated from prediction files alone: report.md, report.html, scores.csv, examples.csv, box plots.

Running it twice on the same files gives byte-identical output (seeded bootstrap, sorted rows,
PNGs written without timestamps). The whole report is built in a directory beside --out and swapped
in at the end, so a failure leaves the previous report as it was, never half of two runs. An --out
that holds anything but a report is refused before any work: nothing but a report is ever replaced.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from eval.baselines import NEEDS_TRAIN, baseline_rows
from eval.clinical import SCORED
from eval.prediction_file import PredictionError, read_predictions
from eval.rouge import ROUGE_KEYS, Rouge
from eval.score import aggregate, score_rows
from eval.stats import paired_bootstrap
from radreport.errors import InputError
from radreport.io import replace_dir
from radreport.paths import output_dir
from radreport.schema import Example

NAMES = {"rouge1": "ROUGE1", "rouge2": "ROUGE2", "rougeL": "ROUGEL", "rougeLsum": "ROUGELsum"}
_LINK_CLOSE = re.compile(r"\](?=[(\[])")  # `](url)`, `][ref]`
_REPORT_FILE = re.compile(r"report\.md|report\.html|scores\.csv|examples\.csv|boxplot-[A-Za-z0-9._-]+\.png")


def check_report_dir(out: str | Path, inputs: list[tuple[str, Path | None]] = ()) -> Path:
    """--out must be new, empty, or a previous report: the report replaces it whole, and must never delete
    anything else (say, the predictions it was given: `inputs`, (flag, path) pairs)."""
    out = output_dir(out, "--out")
    if out.is_symlink():  # the swap renames --out itself: it would replace the link, not the report behind it
        raise InputError(f"--out: {out} is a symbolic link; name the directory itself ({out.resolve()})")
    if out.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise InputError(f"--out: {out} is the current directory or above it; the report replaces --out whole")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not (p.is_file() and _REPORT_FILE.fullmatch(p.name)))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise InputError(
                f"--out: {out} holds files that are not part of a report ({shown}); the report replaces its "
                "directory whole, so name a new or empty directory"
            )
    for flag, f in inputs:
        if f is not None and out.resolve() in Path(f).resolve().parents:
            raise InputError(
                f"--out: {out} holds the {flag} file {f}; the report replaces its directory whole, "
                "so name another directory"
            )
    return out


def collect(files: list[Path], train: list[Example] | None) -> dict[str, dict[str, list[dict]]]:
    """{dataset: {model: rows}}, with the baselines added where missing; ids must match per dataset.

    last-sentence always; most-frequent and retrieval when training data is given."""
    data: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    source: dict[tuple[str, str], Path] = {}
    for f in files:
        for r in read_predictions(f):
            key = (r["dataset"], r["model"])
            if key in source and source[key] != f:
                raise PredictionError(f"{f}: model {r['model']!r} on {r['dataset']!r} also in {source[key]}")
            source[key] = f
            data[r["dataset"]].setdefault(r["model"], []).append(r)
    for dataset, models in data.items():
        first_model = sorted(models)[0]
        ids = {r["id"] for r in models[first_model]}
        for m, rows in models.items():
            if {r["id"] for r in rows} != ids:
                raise PredictionError(
                    f"{source[(dataset, m)]}: ids of {m!r} on {dataset!r} do not match those in "
                    f"{source[(dataset, first_model)]}"
                )
        examples = [
            Example(r["id"], "", r["findings"], r["reference"])
            for r in sorted(models[first_model], key=lambda r: r["id"])
        ]
        for name in ("last-sentence", *(NEEDS_TRAIN if train else ())):
            if f"baseline-{name}" not in models:
                models[f"baseline-{name}"] = baseline_rows(name, examples, dataset, train)
    return {
        d: {m: sorted(rows, key=lambda r: r["id"]) for m, rows in sorted(ms.items())} for d, ms in sorted(data.items())
    }


def _md(text) -> str:
    """Text from prediction files (model names, findings, predictions) as Markdown text, not markup: Markdown
    renderers pass raw HTML through, so a model named `<script>...` would run in whoever views report.md.
    HTML's special characters are escaped (`&lt;` shows as `<`), a `]` that would close a link's text is
    backslash-escaped (a model named `[x](http://...)` is not a link), and a line break cannot start a block."""
    text = _LINK_CLOSE.sub(r"\\\g<0>", html.escape(str(text), quote=False).replace("\\", "\\\\"))
    return text.replace("\r", " ").replace("\n", " ")


class Doc:
    """The report's sections, recorded once and rendered to Markdown and to HTML."""

    def __init__(self, title: str):
        self.title, self.parts = title, []

    def h(self, text):
        self.parts.append(("heading", (text,)))

    def p(self, text):
        self.parts.append(("paragraph", (text,)))

    def table(self, header, rows):
        self.parts.append(("table", (header, rows)))

    def image(self, name, png: bytes):
        self.parts.append(("image", (name, png)))

    def render(self, fmt: type[Markdown] | type[Html]) -> str:
        blocks = []
        for kind, args in self.parts:
            if kind in ("heading", "paragraph"):  # a template of the format: `{}` is the escaped text
                blocks.append(getattr(fmt, kind).format(fmt.escape(*args)))
            else:
                blocks.append(getattr(fmt, kind)(*args))
        return fmt.page(self.title, blocks)


class Markdown:
    heading, paragraph = "\n## {}\n", "{}\n"
    escape = staticmethod(_md)

    @staticmethod
    def page(title, blocks: list[str]) -> str:
        return "\n".join([f"# {_md(title)}\n", *blocks]) + "\n"

    @staticmethod
    def table(header, rows) -> str:
        lines = [[_md(c).replace("|", "\\|") for c in cells] for cells in (header, *rows)]  # a `|` would end the cell
        lines.insert(1, ["---"] * len(header))
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"

    @staticmethod
    def image(name, png: bytes) -> str:
        return f"![{name}]({name})\n"  # our own file name: boxplot-DATASET.png, DATASET a safe name


class Html:
    heading, paragraph = "<h2>{}</h2>", "<p>{}</p>"
    escape = staticmethod(html.escape)
    STYLE = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    )

    @staticmethod
    def page(title, blocks: list[str]) -> str:
        head = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        top = [f"{head}<style>{Html.STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
        return "\n".join(top + blocks) + "\n</body></html>\n"

    @staticmethod
    def table(header, rows) -> str:
        cells = [[("th", c) for c in header], *([("td", c) for c in r] for r in rows)]
        trs = ["<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for tag, c in row) + "</tr>" for row in cells]
        return "<table>" + "\n".join(trs) + "\n</table>"

    @staticmethod
    def image(name, png: bytes) -> str:
        return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def boxplot_png(dataset: str, scored: dict[str, list[dict]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(scored)
    fig, axes = plt.subplots(1, len(ROUGE_KEYS), figsize=(4 * len(ROUGE_KEYS), 3.5 + 0.15 * len(models)), sharey=True)
    for ax, k in zip(axes, ROUGE_KEYS, strict=True):
        ax.boxplot([[r[k] for r in scored[m]] for m in models], vert=True)
        ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{dataset}: {NAMES[k]}")
        ax.set_ylim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


# A spreadsheet opening a CSV runs a cell that starts with one of these as a formula: a prediction
# `=HYPERLINK("http://...", "click")` would be a live link (OWASP "CSV injection"). Such a cell is written
# with a leading single quote, which spreadsheets read as "text" and show as written.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
    if not isinstance(value, str):
        return value
    # the csv module quotes a cell holding "\n" but not one holding a lone "\r", which spreadsheets (and csv
    # readers) take as a row break: the text after it would start a new, unneutralised row
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if value.startswith(FORMULA_START):
        try:
            float(value)  # a signed number ("-0.5") is a number, not a formula
        except ValueError:
            return "'" + value
    return value


def _csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([_csv_cell(c) for c in header])
    w.writerows([_csv_cell(c) for c in r] for r in rows)
    return buf.getvalue()


def _by_ref_mean(a: dict, group: str, key: str) -> float | None:
    stats = a["rouge_by_reference"][group][key]
    return None if stats is None else stats["mean"]


def _headline_metrics(a: dict) -> dict[str, float | None]:
    """The numbers of the headline table (and of scores.csv), by metric name."""
    c, col = a["clinical"], a["collapse"]
    return {
        "micro_f1_abnormal": c["micro_f1_abnormal"],
        "micro_f1_standard_five": c["micro_f1_standard_five"],
        "rougeL": a["rougeL"]["mean"],
        "rougeL_normal_references": _by_ref_mean(a, "normal", "rougeL"),
        "rougeL_abnormal_references": _by_ref_mean(a, "abnormal", "rougeL"),
        "no_finding_f1": c["no_finding"]["f1"],
        "distinct_predictions": col["distinct_predictions"],
        "top_prediction_share": col["top_prediction_share"],
        "abnormal_answered_normal": col["abnormal_answered_normal"],
    }


def render_report(files: list[Path], train: list[Example] | None, aws_compatible: bool, worst: int) -> dict[str, bytes]:
    """Every file of the report, by name, in memory: nothing is written until all of it exists."""
    rouge = Rouge(aws_compatible)
    data = collect(files, train)
    scored = {d: {m: score_rows(rows, rouge) for m, rows in ms.items()} for d, ms in data.items()}
    aggs = {d: {m: aggregate(rows, rouge) for m, rows in ms.items()} for d, ms in scored.items()}
    models = sorted({m for ms in data.values() for m in ms})
    doc = Doc("Radiology impression evaluation")
    doc.p(f"ROUGE mode: {rouge.mode}. F-measures, mean over examples; empty predictions score 0 and are counted.")
    doc.p("Sources: " + ", ".join(sorted(f.name for f in files)))

    doc.h("Headline: clinical agreement and collapse")
    doc.p(
        "Abnormal F1: micro-F1 of the CheXpert labeler's findings in the prediction against those in the reference, "
        "over the 12 abnormal observations (No Finding and Support Devices excluded); standard-5 F1: the same over "
        "Atelectasis, Cardiomegaly, Consolidation, Edema and Pleural Effusion. Uncertain counts as positive. A model "
        "that always writes a normal impression scores 0 on both, however many references are normal. ROUGE-L is "
        "split by whether the reference names an abnormal observation. Collapse: distinct predictions, the share "
        "of the single most common prediction, and the share of abnormal references answered with a normal "
        "impression. n/a: nothing to score (no abnormal observation in references or predictions)."
    )
    doc.table(
        [
            "dataset",
            "model",
            "n",
            "abnormal F1",
            "standard-5 F1",
            "ROUGE-L",
            "ROUGE-L normal refs",
            "ROUGE-L abnormal refs",
            "No Finding F1",
            "distinct predictions",
            "top prediction share",
            "abnormal answered normal",
        ],
        [
            [d, m, a["n"]] + [str(v) if k == "distinct_predictions" else _f(v) for k, v in _headline_metrics(a).items()]
            for d in aggs
            for m, a in aggs[d].items()
        ],
    )
    doc.p(
        "Baselines stand beside the models on purpose: on Indiana dev2 a constant 'No acute cardiopulmonary "
        "abnormality.' scores ROUGE-1 about 0.475, above the reference's fine-tuned 0.466, and 0 abnormal F1. "
        "baseline-retrieval (the impression of the training study with the most similar findings) is the bar a "
        "trained model must clear."
    )

    doc.h("ROUGE by dataset and model")
    header = ["dataset"] + [f"{m} {NAMES[k]}" for m in models for k in ROUGE_KEYS]
    doc.table(
        header,
        [[d] + [(_f(aggs[d][m][k]["mean"]) if m in aggs[d] else "") for m in models for k in ROUGE_KEYS] for d in aggs],
    )

    doc.h("ROUGE by reference: normal or abnormal (by the labeler)")
    doc.table(
        ["dataset", "model", "reference", "n"] + [NAMES[k] for k in ROUGE_KEYS],
        [
            [d, m, group, a["rouge_by_reference"][group]["n"]] + [_f(_by_ref_mean(a, group, k)) for k in ROUGE_KEYS]
            for d in aggs
            for m, a in aggs[d].items()
            for group in ("normal", "abnormal")
        ],
    )

    doc.h("95% bootstrap confidence intervals (1,000 resamples, seed 0)")
    doc.table(
        ["dataset", "model", "n"] + [NAMES[k] for k in ROUGE_KEYS],
        [
            [d, m, a["n"]] + [f"{_f(a[k]['mean'])} [{_f(a[k]['ci95'][0])}, {_f(a[k]['ci95'][1])}]" for k in ROUGE_KEYS]
            for d in aggs
            for m, a in aggs[d].items()
        ],
    )

    doc.h("Paired bootstrap between models (ROUGE-L, same examples)")
    pairs = []
    for d, ms in scored.items():
        names = list(ms)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                r = paired_bootstrap(np.array([x["rougeL"] for x in ms[a]]), np.array([x["rougeL"] for x in ms[b]]))
                pairs.append(
                    [d, a, b, f"{r['diff']:+.4f}", f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]", f"{r['p']:.3f}"]
                )
    doc.table(["dataset", "model A", "model B", "A - B", "95% CI", "p (two-sided)"], pairs)

    doc.h("Distribution per dataset and metric")
    dist = []
    for d, ms in scored.items():
        for k in ROUGE_KEYS:
            for m, rows in ms.items():
                v = np.array([r[k] for r in rows])
                q = np.percentile(v, [25, 50, 75])
                dist.append(
                    [
                        d,
                        NAMES[k],
                        m,
                        len(v),
                        _f(v.mean()),
                        _f(v.std(ddof=1) if len(v) > 1 else 0.0),
                        _f(v.min()),
                        _f(q[0]),
                        _f(q[1]),
                        _f(q[2]),
                        _f(v.max()),
                    ]
                )
    doc.table(["dataset", "metric", "model", "count", "mean", "std", "min", "25%", "50%", "75%", "max"], dist)
    images = {}
    for d, ms in scored.items():
        name = f"boxplot-{d}.png"  # d was checked as a safe file name when its predictions were read
        images[name] = boxplot_png(d, ms)
        doc.image(name, images[name])

    doc.h("CheXpert observations: F1 per observation (support: references with it)")
    doc.table(
        ["dataset", "model"] + list(SCORED),
        [
            [d, m]
            + [
                f"{_f(a['clinical']['per_label'][o]['f1'])} ({a['clinical']['per_label'][o]['support']})"
                for o in SCORED
            ]
            for d in aggs
            for m, a in aggs[d].items()
        ],
    )
    doc.h("No Finding, apart (positive: the labeler finds nothing abnormal at all)")
    doc.table(
        ["dataset", "model", "precision", "recall", "F1", "agreement", "normal references", "normal predictions"],
        [
            [d, m] + [_f(nf[k]) for k in ("precision", "recall", "f1", "agreement")] + [nf["support"], nf["predicted"]]
            for d in aggs
            for m, a in aggs[d].items()
            for nf in [a["clinical"]["no_finding"]]
        ],
    )
    doc.h("Most common prediction per model")
    doc.table(
        ["dataset", "model", "share", "prediction (lower-cased)"],
        [
            [d, m, _f(a["collapse"]["top_prediction_share"]), a["collapse"]["top_prediction"]]
            for d in aggs
            for m, a in aggs[d].items()
        ],
    )

    doc.h(f"Worst {worst} examples per model (ROUGE-L)")
    for d, ms in scored.items():
        for m, rows in ms.items():
            if m.startswith("baseline-"):
                continue
            bad = sorted(rows, key=lambda r: (r["rougeL"], r["id"]))[:worst]
            doc.p(f"{d} / {m}")
            doc.table(
                ["id", "ROUGE-L", "findings", "reference", "prediction"],
                [[r["id"], _f(r["rougeL"]), r["findings"], r["reference"], r["prediction"]] for r in bad],
            )

    files_out = {
        "report.md": doc.render(Markdown).encode("utf-8"),
        "report.html": doc.render(Html).encode("utf-8"),
        "scores.csv": _csv(
            ["dataset", "model", "n", "metric", "value", "ci95_low", "ci95_high"],
            [
                [d, m, a["n"], k, _f(a[k]["mean"]), _f(a[k]["ci95"][0]), _f(a[k]["ci95"][1])]
                for d in aggs
                for m, a in aggs[d].items()
                for k in ROUGE_KEYS
            ]
            + [
                [d, m, a["n"], k, str(v) if k == "distinct_predictions" else _f(v), "", ""]
                for d in aggs
                for m, a in aggs[d].items()
                for k, v in _headline_metrics(a).items()
                if k != "rougeL"
            ]
            + [
                [d, m, a["n"], f"f1:{o}", _f(a["clinical"]["per_label"][o]["f1"]), "", ""]
                for d in aggs
                for m, a in aggs[d].items()
                for o in SCORED
            ],
        ).encode("utf-8"),
        "examples.csv": _csv(
            ["dataset", "model", "id"] + list(ROUGE_KEYS) + ["reference", "prediction"],
            [
                [d, m, r["id"]] + [_f(r[k]) for k in ROUGE_KEYS] + [r["reference"], r["prediction"]]
                for d, ms in scored.items()
                for m, rows in ms.items()
                for r in rows
            ],
        ).encode("utf-8"),
    }
    files_out.update(images)
    return files_out


def build_report(
    files: list[Path], out: Path, train: list[Example] | None = None, aws_compatible: bool = False, worst: int = 5
) -> Path:
    """Render the report, write it into a directory beside `out`, then swap that in for `out` whole."""
    out = check_report_dir(out)
    rendered = render_report(files, train, aws_compatible, worst)
    building = out.with_name(f".{out.name}.building")
    if building.exists():
        shutil.rmtree(building)  # left by a run that crashed; ours by its name
    try:
        building.mkdir(parents=True)
        for name, content in rendered.items():
            (building / name).write_bytes(content)
        replace_dir(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out
