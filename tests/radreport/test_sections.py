from radreport.sections import background_of, findings_and_impression, parse_openi_xml, parse_report_sections

REPORT = """WET READ: ___ 5:12 PM
  IMPRESSION: wet read text, not final.

                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 CLINICAL HISTORY:  ___ year old man with fever

 COMPARISON:  ___

 FINDINGS:
 There is a small left pleural effusion.  The heart is
 mildly enlarged.

 CONCLUSION: Small left effusion.
 Mild cardiomegaly.
"""


def test_mimic_sections_with_header_variants_and_wet_read():
    s = parse_report_sections(REPORT)
    assert s["examination"] == "CHEST (PORTABLE AP)"
    assert s["indication"] == "___ year old man with fever"
    findings, impression = findings_and_impression(s)
    assert findings == "There is a small left pleural effusion. The heart is mildly enlarged."
    assert impression == "Small left effusion. Mild cardiomegaly."  # CONCLUSION, and the wet read is dropped
    assert background_of(s) == "INDICATION: ___ year old man with fever COMPARISON: ___"


def test_report_without_findings_and_with_unknown_header():
    s = parse_report_sections(
        "FINAL REPORT\nPA AND LATERAL VIEWS OF THE CHEST: Clear lungs.\nNOTE: call.\nIMPRESSIONS: Normal."
    )
    assert findings_and_impression(s) == ("Clear lungs.", "Normal.")
    assert s["note"] == "call."
    assert findings_and_impression(parse_report_sections("IMPRESSION: only this")) == ("", "only this")


def test_openi_xml(sample_dir, tmp_path):
    rec = parse_openi_xml(sample_dir / "openi" / "3.xml")
    assert rec["uid"] == "CXR3" and rec["findings"] and rec["impression"]
    bad = tmp_path / "bad.xml"
    bad.write_text("<eCitation><uId id='1'/>\n<Abstract>")
    import pytest

    with pytest.raises(ValueError, match=r"bad.xml:2: malformed XML"):
        parse_openi_xml(bad)
