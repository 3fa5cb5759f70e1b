"""The report's document: one structure, two renderings, text from prediction files never turned into markup."""

import re

from eval.report import Doc, Html, Markdown, _md


def test_markdown_and_html_render_the_same_sections_in_order():
    doc = Doc("Title <1>")
    doc.h("Scores")
    doc.p("text & more")
    doc.table(["model", "ROUGE-L"], [["m|1", 0.5], ["m2", "0.25 [0.1, 0.4]"]])
    doc.image("boxplot-dev1.png", b"\x89PNG")
    md, page = doc.render(Markdown), doc.render(Html)
    assert md == (
        "# Title &lt;1&gt;\n\n\n## Scores\n\ntext &amp; more\n\n| model | ROUGE-L |\n| --- | --- |\n"
        "| m\\|1 | 0.5 |\n| m2 | 0.25 [0.1, 0.4] |\n\n![boxplot-dev1.png](boxplot-dev1.png)\n\n"
    )
    assert re.findall(r"<(h1|h2|p|table|img)\b", page) == ["h1", "h2", "p", "table", "img"]
    assert "<tr><th>model</th><th>ROUGE-L</th></tr>" in page and "<td>m|1</td><td>0.5</td>" in page
    assert "<title>Title &lt;1&gt;</title>" in page and "src='data:image/png;base64,iVBORw=='" in page


def test_text_from_prediction_files_cannot_become_a_link_an_image_or_a_new_block():
    assert _md("[click](http://evil.example)") == "[click\\](http://evil.example)"
    assert _md("![x](http://evil.example/t.png)") == "![x\\](http://evil.example/t.png)"
    assert _md("[a][ref]") == "[a\\][ref]"
    assert _md("a\\](x)") == "a\\\\\\](x)"  # a backslash in the text cannot cancel the escape
    assert _md("line\n# heading\rnext") == "line # heading next"
    assert _md("0.25 [0.1, 0.4]") == "0.25 [0.1, 0.4]"  # brackets that close no link stay as they are
