"""report.html: numbers formatted for reading, data shown as text, and the page checked in a real browser.

The browser test renders the report in headless Chromium (Debian package `chromium`) and reads back, through
`--dump-dom`, what a probe script found after the page loaded: errors raised on the page, figures that did not
decode, and whether hostile text in the data became markup. It is skipped, saying why, where Chromium is
absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pqtradeoff.analysis.analyze import ExtraInputs, make_settings, run_analysis
from pqtradeoff.analysis.report import number, p_value

from scored_helpers import make_scored

HOSTILE = (
    "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"><b>not bold</b> & 'quoted'"
)
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.parametrize(
    "value, text",
    [
        (15420.0, "15,420"),
        (0.0007526, "0.0007526"),
        (-1.23456, "−1.235"),
        (2.5e-9, "2.500e-09"),
        (123456789.0, "1.235e+08"),
        (0.0, "0"),
        (None, "n/a"),
        (7, "7"),
        (12345, "12,345"),
        (float("nan"), "n/a"),
        (float("-inf"), "−∞"),
        (True, "yes"),
    ],
)
def test_numbers_read_the_same_way_everywhere(value, text):
    assert number(value) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (0.0, "< 1e-300"),
        (5e-324, "< 1e-300"),
        (1e-300, "1.00e-300"),
        (0.04567, "0.0457"),
        (None, "n/a"),
        (1.0, "1.00"),
    ],
)
def test_p_values_never_show_zero(value, text):
    assert p_value(value) == text


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    frame = make_scored(n=400)  # a strong string-level correlation: p-values under the float floor
    frame["reward"] = frame["logp_prior"] * 0.1 + frame["reward"] * 1e-3
    inputs = ExtraInputs(notes=[HOSTILE], skipped={"temperature=2.0,top_k=7": HOSTILE})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_analysis(frame, out, make_settings(corpora=50, corpus_size=50, imh_steps=2000, seed=1), inputs)
    return out


def test_hostile_text_is_escaped_and_tiny_p_values_are_bounded(hostile_report):
    html = (hostile_report / "report.html").read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in html and "&lt;script&gt;window.__pwned" in html
    assert "<b>not bold</b>" not in html
    assert "< 1e-300" not in html and "&lt; 1e-300" in html  # the bound itself, escaped
    assert not re.search(r"<td>0</td><td>[^<]*</td><td>[^<]*</td><td>0</td>", html)


PROBE = """<script>
window.__probe = {errors: []};
window.addEventListener('error', e => window.__probe.errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const out = {
    errors: window.__probe.errors,
    images: imgs.length,
    undisplayed: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt.slice(0, 40)),
    scripts: document.scripts.length,
    pwned: window.__pwned || 0,
    bold_injected: Array.from(document.querySelectorAll('b')).some(b => b.textContent === 'not bold'),
    hostile_shown: document.body.innerText.includes('<scr' + 'ipt>window.__pwned = 1</scr' + 'ipt>'),
    wide_tables: Array.from(document.querySelectorAll('table')).filter(
      t => t.getBoundingClientRect().width > t.parentElement.getBoundingClientRect().width + 1 &&
           getComputedStyle(t.parentElement).overflowX !== 'auto').length,
  };
  const pre = document.createElement('pre');
  pre.id = 'probe-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium); CI installs it",
)
def test_report_in_headless_chromium(hostile_report, tmp_path):
    page = tmp_path / "probed.html"
    html = (hostile_report / "report.html").read_text(encoding="utf-8")
    assert html.count("<head>") == 1
    page.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,800",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.as_uri(),
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=os.environ | {"HOME": str(tmp_path)}
    )
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"no probe result (exit {run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(
        found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line and "probed.html" in line]
    assert result["errors"] == [] and console == [], (result["errors"], console)
    assert result["images"] >= 4 and result["undisplayed"] == [], result
    # the probe, and the explorer's three: plotly.js, its data (application/json) and its own script
    assert result["scripts"] == 4 and result["pwned"] == 0 and not result["bold_injected"], result
    assert result["hostile_shown"], "the hostile note should read as text"
    assert result["wide_tables"] == 0, "a table wider than the page without a scroll box"


def test_pdf_figures_are_linked_and_svg_embedded(tmp_path):
    frame = make_scored(n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in ("pdf", "svg"):
            run_analysis(
                frame,
                tmp_path / fmt,
                make_settings(corpora=20, corpus_size=20, imh_steps=500, figure_format=fmt),
            )
    assert 'href="corpus_level.pdf"' in (tmp_path / "pdf" / "report.html").read_text()
    assert (tmp_path / "pdf" / "corpus_level.pdf").read_bytes().startswith(b"%PDF")
    assert "data:image/svg+xml;base64," in (tmp_path / "svg" / "report.html").read_text()


def test_report_module_does_not_need_transformers():
    code = ("import sys; sys.modules['transformers'] = None; import pqtradeoff.analysis.report, jinja2; "
            "print('ok')")
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
