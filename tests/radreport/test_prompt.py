import pytest

from radreport.prompt import render


def test_instruction_is_default_and_raw_is_findings_only():
    assert render(" Lungs clear. ") == (
        "Generate radiology report impressions based on the following findings. Findings: Lungs clear."
    )
    assert render("Lungs clear.", "raw") == "Lungs clear."
    assert "Background: INDICATION: cough" in render("x", "instruction_background", "INDICATION: cough")


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown prompt template 'chat'"):
        render("x", "chat")
