import pytest

from radreport.prompt import INSTRUCTION, render, split_prompt


def test_instruction_is_default_and_raw_is_findings_only():
    assert render(" Lungs clear. ") == (
        "Generate radiology report impressions based on the following findings. Findings: Lungs clear."
    )
    assert render("Lungs clear.", "raw") == "Lungs clear."
    assert "Background: INDICATION: cough" in render("x", "instruction_background", "INDICATION: cough")


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown prompt template 'chat'"):
        render("x", "chat")


@pytest.mark.parametrize(
    "text, parts",
    [
        (render("Lungs clear."), ("Lungs clear.", "")),
        (render("Lungs clear.", "instruction_background", "chest pain"), ("Lungs clear.", "chest pain")),
        ("Lungs clear. Prior Findings: stable", ("Lungs clear. Prior Findings: stable", "")),  # not a prompt
        (f"{INSTRUCTION} Heart normal. Prior Findings: stable", ("Heart normal. Prior Findings: stable", "")),
        (INSTRUCTION, ("", "")),
        (f"{INSTRUCTION} Findings:", ("", "")),
        (f"{INSTRUCTION} Background: cough", ("", "cough")),
    ],
)
def test_a_prompt_splits_as_the_templates_lay_it_out(text, parts):
    assert split_prompt(text) == parts
