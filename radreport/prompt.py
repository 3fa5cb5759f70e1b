"""The prompt template: the one place that turns findings into model input.

Training, serving and evaluation all call `render`, and the model directory records which
template it was trained with, so the three cannot drift apart. The reference trained on raw
findings but prompted with an instruction at inference; we train with what we serve.
"""

from __future__ import annotations

TEMPLATES: dict[str, str] = {
    # The reference's inference prompt (AWS blog post, FLAN-T5 XL via JumpStart).
    "instruction": "Generate radiology report impressions based on the following findings. Findings: {findings}",
    # With the study's background (indication, comparison) when a row has one.
    "instruction_background": (
        "Generate radiology report impressions based on the following findings. "
        "Background: {background} Findings: {findings}"
    ),
    # Findings only: reproduces the reference's training input.
    "raw": "{findings}",
}
DEFAULT_TEMPLATE = "instruction"


def check_template(name: str) -> None:
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r} (known: {', '.join(TEMPLATES)})")


def render(findings: str, template: str = DEFAULT_TEMPLATE, background: str = "") -> str:
    check_template(template)
    return TEMPLATES[template].format(findings=findings.strip(), background=(background or "none").strip())


INSTRUCTION = TEMPLATES["instruction"].split(" Findings:", 1)[0]


def split_prompt(text: str) -> tuple[str, str]:
    """(findings, background) of a text a client may already have wrapped in one of our templates (the
    reference's notebook sends the whole prompt), so the template is not applied twice; any other text is
    findings, whole. Read as the templates lay it out: the instruction, then `Findings: ...` or
    `Background: ... Findings: ...`; a "Findings:" anywhere else is the findings' own text. A prompt that is
    only the instruction gives no findings (""), never the instruction itself."""
    text = text.strip()
    if not text.startswith(INSTRUCTION):
        return text, ""
    rest = text[len(INSTRUCTION) :].strip()
    if rest.startswith("Findings:"):
        return rest[len("Findings:") :].strip(), ""
    if rest.startswith("Background:"):
        background, found, findings = rest[len("Background:") :].partition(" Findings:")
        return (findings.strip(), background.strip()) if found else ("", background.strip())
    return rest, ""


def findings_from_prompt(text: str) -> str:
    return split_prompt(text)[0]
