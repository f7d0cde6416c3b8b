"""The report's explorer: the trade-off plane and the string-level panel, interactive, with their strings.

`explorer_data(data, summary, out_dir)` gathers what the page shows into one JSON-able dict:

- per configuration (analysed, skipped with usable strings, or estimated from the pool by the what-if pass):
  its IMH-corrected and sampled (local) means with standard errors under every reward, its log prior per
  token, KL(q || p+), ESS, skip reason, up to `CLOUD_CORPORA` of its bootstrapped corpora, and a bounded,
  seeded choice of its strings: `SAMPLE_STRINGS` drawn at random, the `EXTREME_STRINGS` with the highest and
  the lowest value of each reward, and the `EXTREME_STRINGS` least likely under the prior;
- per reward, the string-level hexbin (`HEX_ACROSS` hexagons across the log-prior axis) with its count and
  up to `CELL_STRINGS` strings per cell, drawn at random;
- the strings once each (a string chosen twice is stored once), prompts once each, texts cut at `TEXT_CHARS`
  and prompts at `PROMPT_CHARS` characters (the page says where, and where the full text is).

The report gives the explorer what is left of `PAGE_LIMIT_MB` after plotly.js (~4.8 MB) and the static page;
if the data would exceed it, fewer strings per cell, then per configuration, are embedded (`LEVELS`; the
page states the counts it used). At the paper's scale (31 configurations x 2,000 strings, texts longer than
the cuts) the full counts but half the strings per cell fit (tests/analysis/test_explorer.py). Everything
else - every string, every corpus - is in the scored corpus and corpora.parquet.

`scripts()` returns the page's <script> elements: plotly.js itself (`plotly.offline.get_plotlyjs`, so the
page needs no network), the data as `application/json` (every `<`, `>`, `&` escaped: no text in the data can
close the element) and `templates/explorer.js`, which draws with plotly and fills every text with
`textContent`, never as HTML.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from pqtradeoff.analysis import imh
from pqtradeoff.analysis.length import LENGTH
from pqtradeoff.columns import EXTRA_REWARD_PREFIX, Col, extra_reward_columns
from pqtradeoff.sampling import adaptors

#: Strings per configuration drawn at random (seeded), and strings at each end (highest / lowest reward per
#: reward, least likely under the prior).
SAMPLE_STRINGS = 25
EXTREME_STRINGS = 10
#: Strings per hexbin cell, drawn at random (seeded).
CELL_STRINGS = 8
#: Hexagons across the log-prior axis of the string-level panel.
HEX_ACROSS = 36
#: Characters of a completion and of a prompt that the page shows (the rest: the scored corpus).
TEXT_CHARS = 800
PROMPT_CHARS = 600
#: Bootstrapped corpora drawn per configuration on the corrected plane (all of them: corpora.parquet).
CLOUD_CORPORA = 100
#: The page's limit (plotly.js, the static figures and tables, the explorer's data together), in 10^6 bytes;
#: and the bytes kept free for the explorer's own HTML.
PAGE_LIMIT_MB = 15
PAGE_MARGIN = 20_000
#: (strings per cell, strings at random per configuration, extremes) tried in turn until the data fits.
LEVELS = ((CELL_STRINGS, SAMPLE_STRINGS, EXTREME_STRINGS), (4, SAMPLE_STRINGS, EXTREME_STRINGS),
          (2, 15, EXTREME_STRINGS), (1, 10, 5), (0, 5, 3), (0, 0, 1), (0, 0, 0))
#: Plot-area size of the string-level panel in pixels (the hexagons are regular at this size).
HEX_PLOT_PX = (700, 440)
DIGITS = 6  # significant digits of the embedded numbers
UNRELIABLE = "the pool's IS ESS is below min_importance_ess: its standard errors understate the uncertainty"


def _round(value: Any) -> Any:
    """A number for the page: `DIGITS` significant digits; None for NaN, inf and missing."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{DIGITS}g}")


def _pair(mean: Any, se: Any) -> list[Any] | None:
    return None if _round(mean) is None else [_round(mean), _round(se)]


def reward_names(data: pd.DataFrame) -> list[str]:
    """The rewards of the corpus: `reward` first, then each further `reward_<name>` by its name."""
    return ["reward"] + [c[len(EXTRA_REWARD_PREFIX):] for c in extra_reward_columns(data.columns)]


def _column(name: str) -> str:
    return Col.REWARD if name == "reward" else EXTRA_REWARD_PREFIX + name


def _summaries(summary_json: dict[str, Any], rewards: list[str], out_dir: Path) -> dict[str, dict[str, Any]]:
    """summary.json of each reward: this analysis's, and each further reward's own (written before it)."""
    found = {"reward": summary_json}
    for name, head in (summary_json.get("rewards") or {}).items():
        path = out_dir / head["summary"]
        if name in rewards and path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _clouds(out_dir: Path, summaries: dict[str, dict[str, Any]], seed: int) -> dict[str, dict[str, list]]:
    """adaptor -> reward -> [[mean log prior ...], [mean reward ...]] of up to CLOUD_CORPORA corpora."""
    out: dict[str, dict[str, list]] = {}
    for name in summaries:
        folder = out_dir if name == "reward" else out_dir / summaries["reward"]["rewards"][name]["folder"]
        path = folder / "corpora.parquet"
        if not path.is_file():
            continue
        corpora = pd.read_parquet(path, columns=["adaptor", "mean_log_prior", "mean_reward"])
        for adaptor, rows in corpora.groupby("adaptor", sort=False):
            if len(rows) > CLOUD_CORPORA:
                rng = np.random.default_rng(imh.chain_seed(seed, f"explorer-cloud:{adaptor}"))
                rows = rows.iloc[np.sort(rng.choice(len(rows), CLOUD_CORPORA, replace=False))]
            out.setdefault(str(adaptor), {})[name] = [[_round(v) for v in rows["mean_log_prior"]],
                                                     [_round(v) for v in rows["mean_reward"]]]
    return out


def _reward_means(entry: dict[str, Any], corrected: bool = True) -> dict[str, Any]:
    """A summary entry's corrected (`imh`) and sampled (`local`) mean reward, each [mean, s.e.]."""
    return {"imh": _pair(entry["mean_reward"], entry["mean_reward_se"]) if corrected else None,
            "local": _pair(entry["local_mean_reward"], entry["local_mean_reward_se"])}


def _config_records(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per configuration the page can show: analysed, skipped, and what-if estimates."""
    main = summaries["reward"]
    by_reward = {name: {c["adaptor"]: c for c in s["configs"]} for name, s in summaries.items()}
    skipped_by_reward = {name: {k["adaptor"]: k for k in s["skipped"]} for name, s in summaries.items()}
    what_if_by_reward = {name: {w["adaptor"]: w for w in s.get("what_if") or []}
                         for name, s in summaries.items()}
    records: list[dict[str, Any]] = []
    for c in main["configs"]:
        rec = {"adaptor": c["adaptor"], "family": c["family"], "temperature": c["temperature"],
               "kind": "analysed",
               "reason": None if c["reliable"] else UNRELIABLE,
               "n": c["n_strings"], "frontier": c["on_frontier"],
               "lp_imh": _pair(c["mean_log_prior"], c["mean_log_prior_se"]),
               "lp_local": _pair(c["local_mean_log_prior"], c["local_mean_log_prior_se"]),
               "lp_tok": _round(c.get("mean_log_prior_per_token")), "length": _round(c.get("mean_length")),
               "kl": _pair(c.get("kl_aligned"), c.get("kl_aligned_se")),
               "is_ess": _round(c["importance_ess"]), "chain_ess": _round(c["chain_ess"]),
               "acceptance": _round(c["acceptance_rate"]), "rewards": {}}
        for name in summaries:
            r = by_reward[name].get(c["adaptor"])
            if r is not None:
                rec["rewards"][name] = _reward_means(r)
        records.append(rec)
    for k in main["skipped"]:
        rec = {"adaptor": k["adaptor"], "kind": "skipped", "reason": k["reason"], "n": k["n_strings"],
               "lp_imh": None, "lp_local": _pair(k["local_mean_log_prior"], k["local_mean_log_prior_se"]),
               "kl": _pair(k.get("kl_aligned"), k.get("kl_aligned_se")), "rewards": {}}
        for name in summaries:
            r = skipped_by_reward[name].get(k["adaptor"])
            if r is not None:
                rec["rewards"][name] = _reward_means(r, corrected=False)
        records.append(rec)
    analysed = {c["adaptor"] for c in main["configs"]}
    for w in main.get("what_if") or []:
        pool = {name: what_if_by_reward[name].get(w["adaptor"]) for name in summaries}
        if w["sampled"]:
            for rec in records:
                if rec["adaptor"] == w["adaptor"]:
                    rec["pool_ess"] = _round(w["ess"])
                    rec["pool_lp"] = _pair(w["mean_log_prior"], w["mean_log_prior_se"])
                    for name, p in pool.items():
                        if p is not None and name in rec["rewards"]:
                            rec["rewards"][name]["pool"] = _pair(p["mean_reward"], p["mean_reward_se"])
            continue
        if w["adaptor"] in analysed:
            continue
        reason = w["skipped"] or (f"corrected target: {w['skipped_target']}" if w["skipped_target"] else None)
        rec = {"adaptor": w["adaptor"], "family": w["family"], "temperature": w["temperature"],
               "kind": "what-if", "reason": reason, "n": 0,
               "lp_imh": _pair(w["mean_log_prior"], w["mean_log_prior_se"]),
               "lp_local": _pair(w["local_mean_log_prior"], w["local_mean_log_prior_se"]),
               "kl": _pair(w.get("kl_aligned"), None), "length": _round(w.get("mean_length")),
               "pool_ess": _round(w["ess"]), "local_ess": _round(w["local_ess"]), "rewards": {}}
        for name, p in pool.items():
            if p is not None:
                rec["rewards"][name] = _reward_means(p)
        records.append(rec)
    for rec in records:
        if "family" not in rec:
            spec = adaptors.parse(rec["adaptor"])
            rec["family"], rec["temperature"] = spec.family, spec.temperature
        rec["temperature"] = _round(rec["temperature"])  # None: no single temperature (a mixture)
    return records


def _choose(rows: pd.DataFrame, rewards: list[str], seed: int, adaptor: str, sample: int, extremes: int
            ) -> dict[str, list[int]]:
    """Row positions (into `rows`' index) of a configuration's strings to show, by group."""
    rng = np.random.default_rng(imh.chain_seed(seed, f"explorer:{adaptor}"))
    index = rows.index.to_numpy()
    groups: dict[str, list[int]] = {}
    if sample:
        picked = rng.choice(index, min(sample, len(index)), replace=False)
        groups["at random"] = [int(i) for i in np.sort(picked)]
    for name in rewards:
        values = rows[_column(name)].to_numpy(float)
        order = np.argsort(values, kind="stable")
        label = "reward" if name == "reward" else name
        groups[f"highest {label}"] = [int(i) for i in index[order[::-1][:extremes]]]
        groups[f"lowest {label}"] = [int(i) for i in index[order[:extremes]]]
    order = np.argsort(rows[Col.LOGP_PRIOR].to_numpy(float), kind="stable")
    groups["least likely under the prior"] = [int(i) for i in index[order[:extremes]]]
    return groups


def hexbin(x: np.ndarray, y: np.ndarray, across: int = HEX_ACROSS, plot_px: tuple[int, int] = HEX_PLOT_PX
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Assign points to pointy-top hexagons that are regular on a plot area of `plot_px` pixels showing
    `geometry`'s ranges (the data's, padded): `across` hexagons across x. Returns each point's cell id, the
    cells' centres (x, y in data units) and the geometry (`size_px`: twice the circumradius in pixels,
    plotly's marker size of a hexagon; the axis ranges; the half-width and circumradius in data units).

    The centres form two rectangular lattices offset by half a cell; a point belongs to the nearer of its
    nearest centre in each, which is its nearest centre of the triangular lattice: the hexagon it lies in."""
    x0, x1 = float(x.min()), float(x.max())
    y0, y1 = float(y.min()), float(y.max())
    x1, y1 = (x1 if x1 > x0 else x0 + 1.0), (y1 if y1 > y0 else y0 + 1.0)
    # Every point lies within a circumradius R of its cell's centre, and a hexagon reaches R beyond it: the
    # ranges are padded by 2R (pixels) at each end, and the lattice's spacing solves
    # across * sqrt(3) R + 4R = the plot's width.
    radius_px = plot_px[0] / (math.sqrt(3) * across + 4)
    x_px = (plot_px[0] - 4 * radius_px) / (x1 - x0)  # pixels per unit of x
    y_px = (plot_px[1] - 4 * radius_px) / (y1 - y0)  # ... and of y
    width = math.sqrt(3) * radius_px / x_px  # centre spacing along a row in data units of x
    height = 1.5 * radius_px / y_px  # row spacing in data units of y
    u = (x - x0) / width
    v = (y - y0) / height
    # lattice A: rows 0, 2, 4, ... at integer u; lattice B: rows 1, 3, ... at half-integer u
    ia, ja = np.round(u), np.round(v / 2) * 2
    ib, jb = np.floor(u) + 0.5, np.floor(v / 2) * 2 + 1
    # squared distances in units of the circumradius (a unit of u is sqrt(3) radii, a unit of v 1.5)
    da = ((u - ia) * math.sqrt(3)) ** 2 + ((v - ja) * 1.5) ** 2
    db = ((u - ib) * math.sqrt(3)) ** 2 + ((v - jb) * 1.5) ** 2
    cu = np.where(da <= db, ia, ib)
    cv = np.where(da <= db, ja, jb)
    keys = np.round(cu * 2).astype(np.int64) * 1_000_003 + cv.astype(np.int64)
    unique, cell = np.unique(keys, return_inverse=True)
    first = np.zeros(len(unique), dtype=np.int64)
    first[cell[::-1]] = np.arange(len(cell))[::-1]
    radius_x, radius_y = radius_px / x_px, radius_px / y_px
    geometry = {"size_px": 2 * radius_px, "x_range_0": x0 - 2 * radius_x, "x_range_1": x1 + 2 * radius_x,
                "y_range_0": y0 - 2 * radius_y, "y_range_1": y1 + 2 * radius_y, "half_width": width / 2,
                "radius_y": radius_y}
    return cell, x0 + cu[first] * width, y0 + cv[first] * height, geometry


def _hexbins(used: pd.DataFrame, rewards: list[str], seed: int, per_cell: int
             ) -> tuple[dict[str, Any], set[int]]:
    """Per reward: the cells (centre, count, chosen strings) and the geometry; and every row chosen."""
    chosen: set[int] = set()
    out: dict[str, Any] = {}
    if used.empty:
        return out, chosen
    x = used[Col.LOGP_PRIOR].to_numpy(float)
    index = used.index.to_numpy()
    for name in rewards:
        y = used[_column(name)].to_numpy(float)
        cell, cx, cy, geometry = hexbin(x, y)
        rng = np.random.default_rng(imh.chain_seed(seed, f"explorer-hexbin:{name}"))
        order = np.argsort(cell, kind="stable")
        bounds = np.searchsorted(cell[order], np.arange(len(cx) + 1))
        cells = {"x": [], "y": [], "count": [], "strings": []}
        for k in range(len(cx)):
            members = order[bounds[k]:bounds[k + 1]]
            pick = rng.choice(members, min(per_cell, len(members)), replace=False) if per_cell else []
            rows = [int(index[i]) for i in np.sort(pick)]
            chosen.update(rows)
            cells["x"].append(_round(cx[k]))
            cells["y"].append(_round(cy[k]))
            cells["count"].append(int(len(members)))
            cells["strings"].append(rows)
        out[name] = {"cells": cells, "geometry": {k: _round(v) for k, v in geometry.items()},
                     "n": int(len(x))}
    return out, chosen


def _cut(text: Any, limit: int) -> list[Any]:
    """[text, full length] with text cut at `limit` characters (None when missing)."""
    if not isinstance(text, str):
        return [None, 0]
    return [text[:limit], len(text)]


def _strings(data: pd.DataFrame, rows: list[int], rewards: list[str]) -> dict[str, Any]:
    """The chosen strings, column by column, with prompts stored once each."""
    picked = data.loc[rows]
    prompts: list[Any] = []
    prompt_index: dict[Any, int] = {}
    prompt_of: list[int | None] = []
    has_prompt = Col.PROMPT in picked.columns
    for value in (picked[Col.PROMPT] if has_prompt else [None] * len(picked)):
        if not isinstance(value, str):
            prompt_of.append(None)
            continue
        if value not in prompt_index:
            prompt_index[value] = len(prompts)
            prompts.append(_cut(value, PROMPT_CHARS))
        prompt_of.append(prompt_index[value])

    def ints(column: str) -> list[int | None]:
        if column not in picked.columns:
            return [None] * len(picked)
        return [None if pd.isna(v) else int(v) for v in picked[column]]

    column = picked[Col.TEXT] if Col.TEXT in picked.columns else [None] * len(picked)
    texts = [_cut(v, TEXT_CHARS) for v in column]
    return {
        "row": [int(r) for r in rows], "prompt": prompt_of, "prompts": prompts,
        "text": [t[0] for t in texts], "text_length": [t[1] for t in texts],
        "adaptor": [str(a) for a in picked[Col.ADAPTOR]],
        "prompt_id": ints(Col.PROMPT_ID), "sample_id": ints(Col.SAMPLE_ID), "length": ints(LENGTH),
        "finished": [bool(v) for v in picked[Col.FINISHED]],
        "log_prior": [_round(v) for v in picked[Col.LOGP_PRIOR]],
        "rewards": {name: [_round(v) for v in picked[_column(name)]] for name in rewards},
    }


def explorer_data(data: pd.DataFrame, summary_json: dict[str, Any], out_dir: Path, budget: int
                  ) -> dict[str, Any]:
    """Everything the explorer shows (see the module docstring), in at most `budget` bytes of `dumps` where
    the last of `LEVELS` allows; `data` holds the rows the analysis used (`clean_table`'s), `summary_json` is
    this analysis's summary.json."""
    seed = int(summary_json["settings"]["seed"])
    confidence = float(summary_json["settings"]["confidence"])
    out_dir = Path(out_dir)
    rewards = reward_names(data)
    summaries = _summaries(summary_json, rewards, out_dir)
    rewards = [r for r in rewards if r in summaries]
    records = _config_records(summaries)
    clouds = _clouds(out_dir, summaries, seed)
    analysed = [c["adaptor"] for c in summary_json["configs"]]
    groups_of = dict(tuple(data.groupby(Col.ADAPTOR, sort=False)))
    used = data[data[Col.ADAPTOR].isin(analysed)]
    result: dict[str, Any] = {}
    for per_cell, sample, extremes in LEVELS:
        hexbins, chosen = _hexbins(used, rewards, seed, per_cell)
        for rec in records:
            rows = groups_of.get(rec["adaptor"])
            rec["groups"] = ({} if rows is None
                             else _choose(rows, rewards, seed, rec["adaptor"], sample, extremes))
            rec["cloud"] = clouds.get(rec["adaptor"], {})
            for members in rec["groups"].values():
                chosen.update(members)
        rows = sorted(chosen)
        result = {
            "rewards": rewards, "configs": records, "hexbin": hexbins,
            "strings": _strings(data, rows, rewards),
            "limits": {"sample": sample, "extremes": extremes, "per_cell": per_cell, "text_chars": TEXT_CHARS,
                       "prompt_chars": PROMPT_CHARS, "cloud_corpora": CLOUD_CORPORA,
                       "hex_plot_px": list(HEX_PLOT_PX)},
            "has_text": Col.TEXT in data.columns,
            "confidence": confidence, "z": NormalDist().inv_cdf(0.5 + confidence / 2),
            "colours": palette(sorted({r["family"] for r in records})),
        }
        if len(dumps(result).encode("utf-8")) <= budget:
            break
    return result


def palette(families: list[str]) -> dict[str, str]:
    """family -> colour, as the static figures colour them (`plots._palette`: tab10, or tab20 past 10)."""
    import matplotlib
    from matplotlib.colors import to_hex

    cmap = matplotlib.colormaps["tab10" if len(families) <= 10 else "tab20"]
    return {f: to_hex(cmap(i % cmap.N)) for i, f in enumerate(families)}


def dumps(value: Any) -> str:
    """JSON that is safe inside a <script> element: `<`, `>`, `&` and the two JavaScript line separators
    escaped, so no string in the data can end the element or start a comment."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


@functools.cache
def plotly_js() -> str:
    """plotly.js, from the plotly package (the page embeds it: no network)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def page_script() -> str:
    """templates/explorer.js: the page's own script."""
    return (resources.files("pqtradeoff.analysis") / "templates" / "explorer.js").read_text(encoding="utf-8")
