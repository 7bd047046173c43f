"""The report's HTML page: Markdown rendered by markdown-it (CommonMark + tables, raw HTML off), the page
shell a jinja2 template with autoescape; plots stay inline as data: URIs, hostile text stays text."""

import base64
import re

import pandas as pd

from qup_assets.report.render import Report, data_uri, html_page, markdown_to_html

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # not a picture, but every base64 character appears


def test_bold_lists_code_and_tables_render_as_html():
    page = markdown_to_html("# Title\n\n**bold** and `x = 1`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
                            "unit")
    assert "<h1>Title</h1>" in page
    assert "<strong>bold</strong>" in page and "**" not in page
    assert "<code>x = 1</code>" in page
    assert re.search(r"<ul>\s*<li>one</li>\s*<li>two</li>\s*</ul>", page)
    assert "<table>" in page and "<th>a</th>" in page and "<td>2</td>" in page
    assert "<title>qup report: unit</title>" in page and "border-collapse" in page  # the template's shell and CSS


def test_a_png_data_uri_image_survives_and_other_data_uris_do_not():
    uri = data_uri(PNG)
    page = markdown_to_html(f"![plot]({uri})\n\n![svg](data:image/svg+xml;base64,PHN2Zz4=)\n\n"
                            "[page](data:text/html;base64,PHNjcmlwdD4=)\n", "unit")
    assert f'<img src="{uri}" alt="plot"' in page
    assert base64.b64decode(uri.split(",", 1)[1]) == PNG  # byte for byte: nothing percent-encoded on the way
    assert 'src="data:image/svg' not in page and 'href="data:' not in page


def _report(text: str) -> Report:
    """A one-row Report whose text fields (description, verdict, gaps, study name) carry `text`."""
    table1 = pd.DataFrame([{"model_family": "f", "variant": "native", "reward_rm": 1.0, "reward_rm_ci_low": 0.9,
                            "reward_rm_ci_high": 1.1, "avg_at_k_dft": 0.3, "ci_low_dft": 0.2, "ci_high_dft": 0.4}])
    table2 = pd.DataFrame([{"model_family": "f", "variant": "native", "global_ppl": 1.5, "ppl_q1": 1.5,
                            "ppl_q2": 1.5, "ppl_q3": 1.5, "ppl_q4": 1.5, "reward": 1.0, "semantic_preservation": 0.9,
                            "avg_at_k_dft": 0.3}])
    corr = pd.DataFrame([{"method": m, "scope": "pooled", "objective": "dft", "x": "reward", "rho": 0.1,
                          "ci_low": -0.5, "ci_high": 0.6, "n_points": 5} for m in ("spearman", "kendall")])
    paper = pd.DataFrame([{"x": "reward", "spearman": -1.0, "kendall": -1.0, "n_points": 5}])
    rep = Report(f"unit{text}", text, True, ["dft"], ["rm"], 4, table1, table2, corr, pd.DataFrame(), paper,
                 [text], [text])
    rep.plots = {n: PNG for n in ("reward_vs_accuracy", "ppl_vs_accuracy", "quartile_ppl")}
    return rep


def test_model_text_in_the_report_is_escaped_and_never_linked_or_templated():
    hostile = "<script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)> {{ 7 * 7 }}"
    page = html_page(_report(hostile))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "[x](javascript:alert(1))" in page and "href=" not in page  # the link stays text, never an <a>
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "{{ 7 * 7 }}" in page and "49" not in page  # text goes into the template as data, not as template
    assert "<title>qup report: unit&lt;script&gt;" in page  # the title is autoescaped too
    assert page.count(data_uri(PNG)) == 3  # the plots stay inline
