"""The report's explorer: its data (hexbin geometry against brute force, the strings it picks, the page size)
and the page itself in a real browser.

The browser tests drive Debian's headless Chromium (`/usr/bin/chromium`, which `.ci/run` installs) with
Playwright, offline, with every request other than the report file itself aborted and recorded: the demo's
report is hovered, clicked, toggled, switched and sorted, and what it shows is checked against the scored
corpus and summary.json; a report with hostile text in its prompts and completions shows it as text.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pqtradeoff.analysis import explorer
from pqtradeoff.analysis.analyze import ExtraInputs, make_settings, run_analysis
from pqtradeoff.analysis.report import number
from pqtradeoff.demo import make_settings as demo_settings
from pqtradeoff.demo import run_demo

from scored_helpers import make_scored

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium); CI installs it",
)
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"><b>not bold</b> & 'q'"
SMALL_DEMO = dict(families=["ancestral", "top_k=3", "top_p=0.9"], temperatures=[0.5, 1.0, 1.5], dera=[],
                  what_if=["temperature=0.75:1.25:0.25"], num_generations=400, batch_size=400, imh_steps=4000,
                  corpora=100, corpus_size=400)


# ------------------------------------------------------------------------------------------ data, no browser
def _lattice_pixels(geometry: dict, x: np.ndarray, y: np.ndarray, px: tuple[int, int]
                    ) -> tuple[np.ndarray, ...]:
    x_px = px[0] / (geometry["x_range_1"] - geometry["x_range_0"])
    y_px = px[1] / (geometry["y_range_1"] - geometry["y_range_0"])
    return (x - geometry["x_range_0"]) * x_px, (y - geometry["y_range_0"]) * y_px


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32 - 1), across=st.integers(3, 40),
       scale=st.floats(1e-3, 1e3), aspect=st.floats(1e-3, 1e3))
def test_hexbin_puts_every_point_in_its_nearest_hexagon_and_the_hexagons_are_regular(n, seed, across, scale,
                                                                                      aspect):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) * scale
    y = rng.standard_t(3, size=n) * scale * aspect
    px = explorer.HEX_PLOT_PX
    cell, cx, cy, g = explorer.hexbin(x, y, across)
    assert len(cx) == cell.max() + 1 and np.array_equal(np.unique(cell), np.arange(len(cx)))
    radius = g["size_px"] / 2
    # in pixels: a row's centres sqrt(3) R apart, rows 1.5 R apart, so the hexagons are regular on the plot
    pu, pv = _lattice_pixels(g, cx, cy, px)
    assert np.allclose(2 * g["half_width"] * px[0] / (g["x_range_1"] - g["x_range_0"]), math.sqrt(3) * radius)
    assert np.allclose(g["radius_y"] * px[1] / (g["y_range_1"] - g["y_range_0"]), radius)
    # no hexagon is cut by the plot's edges
    half = math.sqrt(3) / 2 * radius
    assert (pu - half >= -1e-6).all() and (pu + half <= px[0] + 1e-6).all()
    assert (pv - radius >= -1e-6).all() and (pv + radius <= px[1] + 1e-6).all()
    # brute force: every node of the lattice near the data; each point's cell is its nearest node, in pixels
    rows = np.arange(-3, int(px[1] / (1.5 * radius)) + 4)
    cols = np.arange(-3, across + 4)
    x0, y0 = float(x.min()), float(y.min())
    width, height = 2 * g["half_width"], g["radius_y"] * 1.5
    nodes_x = np.concatenate([x0 + (cols + 0.5 * (r % 2)) * width for r in rows])
    nodes_y = np.concatenate([np.full(len(cols), y0 + r * height) for r in rows])
    nu, nv = _lattice_pixels(g, nodes_x, nodes_y, px)
    qu, qv = _lattice_pixels(g, x, y, px)
    d_all = (qu[:, None] - nu[None, :]) ** 2 + (qv[:, None] - nv[None, :]) ** 2
    d_own = (qu - pu[cell]) ** 2 + (qv - pv[cell]) ** 2
    assert np.all(d_own <= d_all.min(axis=1) + 1e-6 * radius**2)
    assert np.all(d_own <= radius**2 * (1 + 1e-9))


def test_embedded_json_cannot_close_its_script_element():
    value = {"text": [HOSTILE, "</script><!-- \u2028 \u2029 </SCRIPT>"], "n": [1, 2.5, None]}
    text = explorer.dumps(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def _analysed(frame: pd.DataFrame, out: Path, **extra) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_analysis(frame, out,
                     make_settings(corpora=100, corpus_size=200, imh_steps=2000, seed=3, **extra),
                     ExtraInputs(notes=[HOSTILE], skipped={"temperature=2.0,top_k=7": HOSTILE}))


def _explorer_json(report: Path) -> dict:
    html = report.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="pq-explorer-data">(.*?)</script>', html, re.S)
    assert found
    return json.loads(found.group(1))


def _paper_scale(long: bool = True) -> pd.DataFrame:
    """31 configurations x 2,000 strings (the paper's grid), prompts and completions longer than the cuts."""
    families = ("ancestral", "top_k=30", "top_k=50", "top_p=0.9", "top_p=0.95", "typical_p=0.9")
    frame = pd.concat([make_scored(families=families, temps=(0.5, 0.75, 1.0, 1.25, 1.5), n=2000),
                       make_scored(seed=1, families=("eta_cutoff=0.0009",), temps=(1.0,), n=2000)],
                      ignore_index=True)
    rng = np.random.default_rng(0)
    words = np.array(["alpha", "beta", "gamma", "delta", "<i>x</i>", "epsilon", "zeta", "eta", "ünï"])
    if long:
        frame["text"] = [" ".join(rng.choice(words, 250)) for _ in range(len(frame))]
        frame["prompt"] = [f"Human: {' '.join(rng.choice(words, 110))} Assistant:" for _ in range(len(frame))]
    frame["prompt_id"] = np.arange(len(frame)) // 2
    return frame


def test_the_page_stays_under_its_limit_at_the_papers_scale(tmp_path):
    _analysed(_paper_scale(), tmp_path / "a")
    report = tmp_path / "a" / "report.html"
    assert report.stat().st_size <= explorer.PAGE_LIMIT_MB * 10**6, report.stat().st_size
    data = _explorer_json(report)
    assert len([c for c in data["configs"] if c["kind"] == "analysed"]) == 31
    limits = data["limits"]
    assert limits["sample"] == explorer.SAMPLE_STRINGS and limits["extremes"] == explorer.EXTREME_STRINGS
    assert limits["per_cell"] >= 1  # fewer strings per hexagon, not fewer per configuration
    cut = [t for t in data["strings"]["text"] if t is not None]
    assert cut and max(map(len, cut)) == explorer.TEXT_CHARS
    assert all(n > explorer.TEXT_CHARS for n in data["strings"]["text_length"])


def test_a_smaller_limit_embeds_fewer_strings_and_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(explorer, "PAGE_LIMIT_MB", 7)
    _analysed(_paper_scale(), tmp_path / "a")
    report = tmp_path / "a" / "report.html"
    assert report.stat().st_size <= 7 * 10**6
    limits = _explorer_json(report)["limits"]
    assert (limits["per_cell"], limits["sample"]) < (explorer.CELL_STRINGS, explorer.SAMPLE_STRINGS)


def test_strings_chosen_per_configuration_are_its_extremes_and_a_seeded_sample(tmp_path):
    frame = _paper_scale(long=False).iloc[:8000]
    frame = frame.assign(reward_other=np.random.default_rng(5).normal(size=len(frame)))
    _analysed(frame, tmp_path / "a")
    _analysed(frame, tmp_path / "b")
    data = _explorer_json(tmp_path / "a" / "report.html")
    assert data == _explorer_json(tmp_path / "b" / "report.html")  # the same seed, the same page
    s = data["strings"]
    at = {row: k for k, row in enumerate(s["row"])}
    used = frame[frame["finished"]].reset_index(drop=True)
    for c in data["configs"]:
        if c["kind"] != "analysed":
            continue
        rows = used[used["adaptor"] == c["adaptor"]]
        groups = c["groups"]
        def shown(group: str, column: str, rows=rows, groups=groups) -> list[float]:
            return sorted(rows.loc[groups[group], column])

        assert shown("highest reward", "reward") == sorted(rows["reward"].nlargest(10))
        assert shown("lowest reward", "reward") == sorted(rows["reward"].nsmallest(10))
        assert shown("least likely under the prior", "logp_prior") == sorted(rows["logp_prior"].nsmallest(10))
        assert len(groups["at random"]) == explorer.SAMPLE_STRINGS
        assert set(groups["at random"]) <= set(rows.index)
        for k in (at[r] for g in groups.values() for r in g):
            row = used.loc[s["row"][k]]
            assert s["adaptor"][k] == c["adaptor"] == row["adaptor"]
            assert s["log_prior"][k] == pytest.approx(row["logp_prior"], rel=1e-5)
            assert s["rewards"]["reward"][k] == pytest.approx(row["reward"], rel=1e-5)
    assert data["rewards"] == ["reward"]  # run_analysis alone has no further analyses to read


def test_no_explorer_when_asked_for_a_static_report(tmp_path):
    _analysed(make_scored(n=60), tmp_path / "a", interactive=False)
    html = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert "pq-explorer" not in html and len(html) < 2 * 10**6


# ------------------------------------------------------------------------------------------ in a browser
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Page:
    """A report opened offline: every request other than the file itself is aborted and recorded."""

    def __init__(self, browser, report: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
        self.url = report.resolve().as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.goto(self.url)
        self.page.wait_for_selector("#pq-explorer[data-ready='1']", timeout=60_000)

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def _route(self, route) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def outside(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    def traces(self, div: str = "pq-plane") -> list[dict]:
        return self.page.evaluate(f"""() => document.getElementById('{div}').data.map(t => ({{
            name: t.name, role: t.meta ? t.meta.role : null, x: Array.from(t.x), y: Array.from(t.y)}}))""")

    def point(self, trace: int, index: int = 0, div: str = "pq-plane") -> tuple[float, float]:
        """The centre of a drawn marker, in page pixels."""
        marker = self.page.locator(f"#{div} .scatterlayer .trace").nth(trace).locator(".points path")
        marker = marker.nth(index)
        marker.scroll_into_view_if_needed()
        box = marker.bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def hover(self, x: float, y: float, div: str = "pq-plane") -> str:
        self.page.mouse.move(x - 3, y - 3)
        self.page.mouse.move(x, y, steps=3)
        label = self.page.locator(f"#{div} .hoverlayer .hovertext")
        label.first.wait_for(timeout=5000)
        return label.first.text_content()

    def rows(self, panel: str) -> list[dict]:
        return self.page.evaluate(f"""() => Array.from(
          document.querySelectorAll('#{panel} tbody tr')).map(tr => ({{
            group: tr.closest('.pq-group').dataset.group, sample_id: Number(tr.dataset.sampleId),
            prompt_id: Number(tr.dataset.promptId), adaptor: tr.dataset.adaptor,
            text: tr.querySelectorAll('.pq-text')[1].textContent,
            prompt: tr.querySelectorAll('.pq-text')[0].textContent,
            reward: tr.querySelector('td[data-reward="reward"]').textContent,
            log_prior: tr.querySelector('td[data-log-prior]').textContent}}))""")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer-demo")
    summary, _ = run_demo(out, demo_settings(**SMALL_DEMO), progress=False)
    corpus = pd.read_parquet(out / "scored")
    return out, json.loads((out / "summary.json").read_text()), corpus[corpus["finished"]]


@needs_browser
def test_hover_and_click_a_configuration_shows_its_estimates_and_its_strings(browser, demo):
    out, summary, corpus = demo
    view = Page(browser, out / "report.html")
    traces = view.traces()
    target = summary["configs"][2]
    index = next(i for i, t in enumerate(traces) if t["name"] == target["adaptor"] and t["role"] == "centre")
    assert traces[index]["x"] == [pytest.approx(target["mean_log_prior"], rel=1e-5)]
    assert traces[index]["y"] == [pytest.approx(target["mean_reward"], rel=1e-5)]
    x, y = view.point(index)
    label = view.hover(x, y)
    assert target["adaptor"] in label
    assert f"reward {number(target['mean_reward'])}" in label
    assert f"IS ESS {number(target['importance_ess'])}" in label
    view.page.mouse.click(x, y)
    view.page.wait_for_selector(f"#pq-strings[data-adaptor='{target['adaptor']}'] tbody tr")
    rows = view.rows("pq-strings")
    own = corpus[corpus["adaptor"] == target["adaptor"]].set_index("sample_id")
    assert {r["group"] for r in rows} == {"at random", "highest reward", "lowest reward",
                                          "least likely under the prior"}
    for r in rows:
        string = own.loc[r["sample_id"]]
        assert r["adaptor"] == target["adaptor"] and r["text"] == string["text"][: explorer.TEXT_CHARS]
        assert r["reward"] == number(float(string["reward"]))
        assert r["log_prior"] == number(float(string["logp_prior"]))
    highest = sorted(own.loc[[r["sample_id"] for r in rows if r["group"] == "highest reward"], "reward"])
    assert highest == sorted(own["reward"].nlargest(explorer.EXTREME_STRINGS))
    assert view.errors == [] and view.outside() == [], (view.errors, view.outside())


@needs_browser
def test_toggles_plane_switch_and_sortable_table(browser, demo):
    out, summary, _ = demo
    view = Page(browser, out / "report.html")
    by_name = {c["adaptor"]: c for c in summary["configs"]}
    family = "top_k=3"
    names = lambda: {t["name"] for t in view.traces()}  # noqa: E731
    before = names()
    assert any(family in n for n in before)
    view.page.locator(f"input[data-family='{family}']").uncheck()
    assert names() == {n for n in before if not n.endswith(family)} != before
    view.page.locator(f"input[data-family='{family}']").check()
    assert names() == before
    view.page.locator("input[data-temperature='0.5']").uncheck()
    assert all(not n.startswith("temperature=0.5,") and n != "temperature=0.5" for n in names())
    view.page.locator("input[data-temperature='0.5']").check()
    view.page.locator("input[data-toggle='what-if']").uncheck()
    assert {t["name"] for t in view.traces()} <= {c["adaptor"] for c in summary["configs"]} | {
        k["adaptor"] for k in summary["skipped"]}
    view.page.locator("input[data-toggle='what-if']").check()
    # the KL plane: every analysed configuration at its KL(q || p+) and its sampled mean reward
    view.page.select_option("#pq-plane-select", "kl")
    for t in view.traces():
        if t["role"] == "centre" and t["name"] in by_name:
            assert t["x"] == [pytest.approx(by_name[t["name"]]["kl_aligned"], rel=1e-5)]
            assert t["y"] == [pytest.approx(by_name[t["name"]]["local_mean_reward"], rel=1e-5)]
    assert "KL" in view.page.locator("#pq-plane .xtitle").text_content()
    # the table: every configuration; sorted by a column, one way then the other
    header = view.page.locator("#pq-table th[data-key='is_ess']")
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    order = view.page.eval_on_selector_all("#pq-table tbody tr", "rows => rows.map(r => r.dataset.adaptor)")
    analysed = sorted(summary["configs"], key=lambda c: c["importance_ess"])
    assert order[: len(analysed)] == [c["adaptor"] for c in analysed]
    view.page.locator("#pq-table th[data-key='is_ess']").click()
    order = view.page.eval_on_selector_all("#pq-table tbody tr", "rows => rows.map(r => r.dataset.adaptor)")
    assert order[: len(analysed)] == [c["adaptor"] for c in analysed[::-1]]
    view.page.locator(f"#pq-table tbody tr[data-adaptor='{analysed[0]['adaptor']}']").click()
    assert view.page.locator("#pq-strings").get_attribute("data-adaptor") == analysed[0]["adaptor"]
    assert view.errors == [] and view.outside() == [], (view.errors, view.outside())


@needs_browser
def test_click_a_hexagon_lists_strings_that_lie_in_it(browser, demo):
    out, _, corpus = demo
    view = Page(browser, out / "report.html")
    data = _explorer_json(out / "report.html")
    cells, g = data["hexbin"]["reward"]["cells"], data["hexbin"]["reward"]["geometry"]
    k = int(np.argmax(cells["count"]))
    x, y = view.point(0, k, div="pq-hexbin")
    label = view.hover(x, y, div="pq-hexbin")
    assert f"{cells['count'][k]:,} strings" in label
    view.page.mouse.click(x, y)
    view.page.wait_for_selector(f"#pq-cell-strings[data-cell='{k}'] tbody tr")
    rows = view.rows("pq-cell-strings")
    assert len(rows) == min(data["limits"]["per_cell"], cells["count"][k])
    keyed = corpus.set_index(["adaptor", "sample_id"])
    for r in rows:
        string = keyed.loc[(r["adaptor"], r["sample_id"])]
        assert abs(string["logp_prior"] - cells["x"][k]) <= g["half_width"] * (1 + 1e-4)
        assert abs(string["reward"] - cells["y"][k]) <= g["radius_y"] * (1 + 1e-4)
        assert r["text"] == string["text"]
    assert view.errors == [] and view.outside() == [], (view.errors, view.outside())


@needs_browser
def test_the_page_works_alone_after_it_is_copied(browser, demo, tmp_path):
    out, _, _ = demo
    shutil.copy(out / "report.html", tmp_path / "copied.html")
    view = Page(browser, tmp_path / "copied.html")
    assert view.page.evaluate("() => Array.from(document.images).every(i => i.complete && i.naturalWidth)")
    assert len(view.traces()) > 0 and view.page.locator("#pq-table tbody tr").count() > 0
    assert view.errors == [] and view.outside() == [], (view.errors, view.outside())
    assert view.url in view.requests
    # the check can fail: a page that asks for anything outside itself is caught
    html = (tmp_path / "copied.html").read_text(encoding="utf-8")
    canary = "https://example.com/canary.png"
    (tmp_path / "canary.html").write_text(html.replace("<body>", f'<body><img src="{canary}" alt="">', 1),
                                          encoding="utf-8")
    assert canary in Page(browser, tmp_path / "canary.html").outside()


@needs_browser
def test_hostile_prompts_and_completions_show_as_text(browser, tmp_path):
    frame = make_scored(n=60)
    frame["prompt"] = HOSTILE
    frame["text"] = [HOSTILE + f" #{i}" for i in range(len(frame))]
    _analysed(frame, tmp_path / "a")
    view = Page(browser, tmp_path / "a" / "report.html")
    spec = frame["adaptor"].iloc[0]
    view.page.locator(f"#pq-table tbody tr[data-adaptor='{spec}']").click()
    rows = view.rows("pq-strings")
    assert rows and all(r["prompt"] == HOSTILE and r["text"].startswith(HOSTILE) for r in rows)
    x, y = view.point(next(i for i, t in enumerate(view.traces()) if t["role"] == "centre"))
    view.hover(x, y)
    assert view.page.evaluate("() => window.__pwned || 0") == 0
    assert view.page.locator("#pq-explorer b", has_text="not bold").count() == 0
    assert view.page.locator("#pq-explorer img").count() == 0
    skipped = view.page.locator("#pq-table tbody tr[data-adaptor='temperature=2.0,top_k=7'] td")
    assert skipped.last.text_content() == HOSTILE
    assert view.errors == [] and view.outside() == [], (view.errors, view.outside())


@needs_browser
def test_the_readme_screenshot_script_draws_the_hovered_plane_and_its_strings(browser, demo, tmp_path):
    import importlib.util

    out, summary, _ = demo
    path = Path(__file__).resolve().parents[2] / "scripts" / "explorer_screenshot.py"
    spec = importlib.util.spec_from_file_location("explorer_screenshot", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    adaptor = summary["configs"][0]["adaptor"]
    image = script.screenshot(browser, out / "report.html", tmp_path / "shot.png", adaptor)
    head = image.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width == 1150 and height > 500


@needs_browser
def test_the_reward_switch_shows_each_rewards_own_analysis(browser, tmp_path):
    from pqtradeoff.analysis.analyze import analyze_dir

    from scored_helpers import write_scored

    frame = make_scored(n=60)
    frame["reward_other"] = -frame["reward"] + np.random.default_rng(2).normal(scale=0.2, size=len(frame))
    frame["text"] = [f"string {i}" for i in range(len(frame))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyze_dir(write_scored(frame, tmp_path / "scored"), tmp_path / "a",
                    make_settings(corpora=50, corpus_size=60, imh_steps=1000, seed=2))
    other = json.loads((tmp_path / "a" / "rewards" / "other" / "summary.json").read_text())
    view = Page(browser, tmp_path / "a" / "report.html")
    view.page.select_option("#pq-reward-select", "other")
    means = {c["adaptor"]: c["mean_reward"] for c in other["configs"]}
    centres = [t for t in view.traces() if t["role"] == "centre" and t["name"] in means]
    assert len(centres) == len(means)
    for t in centres:
        assert t["y"] == [pytest.approx(means[t["name"]], rel=1e-5)]
    header = view.page.locator("#pq-table th[data-key='r_imh']").text_content()
    assert header.startswith("reward other")
    view.page.locator(f"#pq-table tbody tr[data-adaptor='{centres[0]['name']}']").click()
    shown = view.page.eval_on_selector_all("#pq-strings tbody tr", """rows => rows.map(r => [
        r.dataset.adaptor, Number(r.dataset.promptId), Number(r.dataset.sampleId),
        r.querySelector("td[data-reward='other']").textContent])""")
    keyed = frame.set_index(["adaptor", "prompt_id", "sample_id"])["reward_other"]
    assert shown and all(number(float(keyed.loc[(a, p, s)])) == text for a, p, s, text in shown)
    assert view.errors == [] and view.outside() == [], (view.errors, view.outside())
