"""MIMIC-CXR report -> MEDIQA 2021 text, on report texts written for these tests (the layout is MIMIC's:
continuation lines and headers start with one space). Expected values follow MEDIQA's make_mimic_data.py."""

import pytest

from radreport.sections import MissingSection, mediqa_text, parse_openi_xml, section_name, split_sections

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough  // eval for pneumonia

 COMPARISON:  Chest radiograph from 12/3/2019.

 FINDINGS:

 Moderate right pleural effusion measuring 2.5 cm in depth, with adjacent
 atelectasis.  Compression deformity of T12.  The heart is mildly
 enlarged.

 IMPRESSION:

 1. Moderate right pleural effusion.
 2. Mild cardiomegaly, unchanged since 12/3/2019.
 3. T12 compression deformity measuring 2.5 cm.
 10. Tenth item keeps its number.

 NOTIFICATION:  Discussed with Dr. ___ at 2:15 PM.
"""


def test_numbered_impression_loses_its_list_numbers_and_nothing_else():
    t = mediqa_text(REPORT)
    assert t.impression == (
        "Moderate right pleural effusion. Mild cardiomegaly, unchanged since 12/3/2019. "
        "T12 compression deformity measuring 2.5 cm. 10. Tenth item keeps its number."
    )  # the NOTIFICATION after it is its own section
    assert t.findings == (
        "Moderate right pleural effusion measuring 2.5 cm in depth, with adjacent atelectasis. "
        "Compression deformity of T12. The heart is mildly enlarged."
    )  # wrapped lines joined, runs of spaces collapsed, "2.5 cm" and "T12." untouched
    assert t.background == (
        "EXAMINATION: CHEST (PA AND LAT) INDICATION: ___ year old woman with cough // eval for pneumonia "
        "COMPARISON: Chest radiograph from 12/3/2019."
    )  # "FINAL REPORT" and the "FINDINGS:" header gone


@pytest.mark.parametrize(
    "impression, expected",
    [
        ("1. Effusion. 2. Edema.", "Effusion. Edema."),  # numbers inside one line
        ("1.  Effusion.\n 2.  Edema.", "Effusion. Edema."),
        ("Effusion, 2.5 cm. Nodule at T12. Since 1.2.2019.", "Effusion, 2.5 cm. Nodule at T12. Since 1.2.2019."),
        (
            "Fracture of rib 5. No effusion.",
            "Fracture of rib No effusion.",
        ),  # MEDIQA's rule takes a sentence-final digit
        ("Findings: 2. 3. Edema.", "Findings: 3. Edema."),  # two markers in a row: only the first goes
        ("Effusion.\n2. Edema.", "Effusion.2. Edema."),  # a column-0 line is glued to the one before
        ("1.Effusion 11. Edema", "1.Effusion 11. Edema"),  # no space after the dot / two digits: not list markers
    ],
)
def test_list_number_rules(impression, expected):
    report = f"FINAL REPORT\n FINDINGS: Clear lungs.\n IMPRESSION: {impression}\n"
    assert mediqa_text(report).impression == expected


def test_wrapped_lines_and_whitespace():
    report = "FINAL REPORT\n FINDINGS: Heart size\n is normal.\tNo\n\n effusion,\nno edema.\n IMPRESSION:  Normal.\n"
    # line breaks are deleted, not replaced: MIMIC continuation lines bring their own leading space
    assert mediqa_text(report).findings == "Heart size is normal.\tNo effusion,no edema."


def test_trailing_headers():
    # a header with nothing after its colon is no header: its word stays in the section before it
    with pytest.raises(MissingSection, match="no IMPRESSION section"):
        mediqa_text("FINAL REPORT\n FINDINGS: Clear lungs.\n IMPRESSION:")
    assert mediqa_text("FINAL REPORT\n FINDINGS: Clear lungs.\n IMPRESSION: Normal.\n NOTE:").impression == (
        "Normal. NOTE:"
    )
    # an empty impression section does not count: the report has none
    with pytest.raises(MissingSection, match="no IMPRESSION section"):
        mediqa_text("FINAL REPORT\n FINDINGS: Clear lungs.\n IMPRESSION: \n")
    with pytest.raises(MissingSection, match="no FINDINGS and no IMPRESSION section") as e:
        mediqa_text("FINAL REPORT\n Clear lungs, no effusion.\n")
    assert e.value.missing == ["findings", "impression"]


def test_wet_read_before_final_report_stays_in_background_and_its_impression_wins():
    report = (
        " WET READ: ___ ___ 5:12 PM\n  No pneumothorax.\n ______________________\n"
        "                                 FINAL REPORT\n INDICATION:  Line placement.\n"
        " FINDINGS:  Right IJ line tip in the mid SVC.\n IMPRESSION:  Line in standard position.\n"
    )
    t = mediqa_text(report)
    # "FINAL REPORT" is removed only when the text starts with it
    assert t.background == (
        "WET READ: ___ ___ 5:12 PM No pneumothorax. ______________________ FINAL REPORT INDICATION: Line placement."
    )
    assert t.impression == "Line in standard position."
    wet_impression = " WET READ: ___\n  IMPRESSION: Wet read text.\n" + report.split("\n", 3)[3]
    # the first impression wins, as in MEDIQA, and runs to the next header, so it takes the title line along
    assert mediqa_text(wet_impression).impression == "Wet read text. FINAL REPORT"


def test_header_rules():
    report = (
        "FINAL REPORT\n CHEST, PA AND LATERAL:\n\n INDICATION: Cough.\n"
        "\n FINDINGS: \n FINDINGS: Clear lungs.\nFINDINGS: not a header at column 0.\n"
        " Impression: not a header (mixed case).\n CONCLUSION: First.\n IMPRESSION: Second.\n"
    )
    names = [s.name for s in split_sections(report)]
    # the empty title-like "CHEST, PA AND LATERAL" findings and the empty first FINDINGS are dropped
    assert names == ["preamble", "indication", "findings", "impression", "impression"]
    t = mediqa_text(report)
    assert t.findings == "Clear lungs.FINDINGS: not a header at column 0. Impression: not a header (mixed case)."
    assert t.impression == "First."
    assert t.background == "CHEST, PA AND LATERAL: INDICATION: Cough. FINDINGS:"  # only the last header is cut
    view_header = "FINAL REPORT\n INDICATION: Cough.\n PA AND LATERAL VIEWS OF THE CHEST: Clear.\n IMPRESSION: Normal."
    assert mediqa_text(view_header).findings == "Clear."
    assert mediqa_text(view_header).background == "INDICATION: Cough. PA AND LATERAL VIEWS OF THE"  # its last word
    # the findings header first: the reference cuts at rfind(" ") == -1, keeping all but the colon
    assert mediqa_text("FINAL REPORT\n FINDINGS: a\n IMPRESSION: b").background == "FINDINGS"


@pytest.mark.parametrize(
    "header, name",
    [
        ("IMPRESSION", "impression"),
        ("IMPRESSIONS", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),
        ("NDICATION", "impression"),  # sic, as the reference's table has it
        ("FINDINGS/ IMPRESSION", "impression"),
        ("FINDINGS AND RECOMMENDATIONS", "findings"),
        ("PORTABLE AP CHEST", "findings"),
        ("PA AND LAT", "findings"),
        ("  FINDNGS ", "findings"),
        ("CLINICAL HISTORY/CHEST PAIN", "history"),
        ("REASON FOR EXAM", "indication"),
        ("COMPARISION", "comparison"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("WET READ", "wet read"),
        ("NOTE", "note"),
    ],
)
def test_section_names(header, name):
    assert section_name(header) == name


def test_openi_xml(sample_dir, tmp_path):
    rec = parse_openi_xml(sample_dir / "openi" / "3.xml")
    assert rec["uid"] == "CXR3" and rec["findings"] and rec["impression"]
    bad = tmp_path / "bad.xml"
    bad.write_text("<eCitation><uId id='1'/>\n<Abstract>")
    with pytest.raises(ValueError, match=r"bad.xml:2: malformed XML"):
        parse_openi_xml(bad)
    no_uid = tmp_path / "no_uid.xml"
    no_uid.write_text("<eCitation><AbstractText Label='FINDINGS'>Clear.</AbstractText></eCitation>")
    assert parse_openi_xml(no_uid) == {"uid": "", "findings": "Clear."}
