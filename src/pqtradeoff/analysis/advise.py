"""Advice: the cheapest adaptor (or mixture of two) that reaches a reward target, from an analysis's summary.

What sampling with an adaptor actually gives is its LOCAL (uncorrected) law, so advice works on each
configuration's plain means over its sampled strings, `local_mean_reward` and `local_mean_log_prior`, with
their standard errors - for every sampled configuration, those the IMH analysis skipped included (summary.json
records their local means too).

Sampling from adaptor A with probability lambda and from B otherwise gives exactly the expectations
lambda * A + (1 - lambda) * B, so every point of the convex hull of the configurations' (mean log prior,
mean reward) points is reachable. The useful ones lie on its upper-right boundary (the `frontier`: from the
highest-reward vertex to the highest-log-prior vertex): nothing reachable has both more reward and more prior
log-probability. A target is met at the frontier point with the most prior log-probability (for
`--min-reward R`) or the most reward (for `--max-prior-loss L` below a reference configuration).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pqtradeoff.analysis import stats
from pqtradeoff.errors import PQError
from pqtradeoff.sampling import adaptors

DEFAULT_REFERENCE = "temperature=1.0"


@dataclass
class Point:
    """One sampled configuration's local means."""

    adaptor: str
    n_strings: int
    log_prior: float
    log_prior_se: float
    reward: float
    reward_se: float
    imh_skipped: bool = False  # the IMH analysis skipped it (its local means are still valid)


@dataclass
class Estimate:
    """An expected value with its standard error and interval."""

    mean: float
    se: float
    ci: list[float]


@dataclass
class Choice:
    """A single configuration (weights [1]) or a mixture of two (sample adaptors[0] with weights[0])."""

    adaptors: list[str]
    weights: list[float]
    mean_reward: Estimate
    mean_log_prior: Estimate

    @property
    def kind(self) -> str:
        return "config" if len(self.adaptors) == 1 else "mixture"


@dataclass
class Advice:
    """The answer to one target."""

    target: dict[str, Any]  # kind (min_reward | max_prior_loss), value, and the reference for max_prior_loss
    confidence: float
    reachable: bool
    choice: Choice | None  # the cheapest way: a frontier config, or a mixture of two neighbouring vertices
    best_single: Choice | None  # the cheapest single configuration that meets the target
    indistinguishable: list[str]  # configs whose means differ from the choice's by less than the interval
    frontier: list[str]  # upper-right hull vertices, by mean log prior high to low
    imh_skipped_used: list[str]  # configs the IMH analysis skipped, used here through their local means
    excluded: dict[str, str]  # adaptor -> why it is left out (no sampled strings)
    direction: str | None = None  # where (from the data) to look when the target is out of reach
    notes: list[str] = field(default_factory=list)
    kl_plane: list[dict[str, Any]] = field(default_factory=list)  # every sampled config: KL(q || p+), reward
    # per family, the what-if adaptor (estimated from the pool, never sampled) that meets the target at the
    # least cost: adaptor, temperature, local means +- s.e., ESS (summary.json's `what_if`)
    what_if: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("choice", "best_single"):
            choice = getattr(self, key)
            if choice is not None:
                out[key]["kind"] = choice.kind
        return out


# -------------------------------------------------------------------------------------------- reading
def _se(value: Any) -> float:
    return float("nan") if value is None else float(value)


def points_from_summary(summary: dict[str, Any]) -> tuple[list[Point], dict[str, str]]:
    """Every sampled configuration's local means (analysed and skipped), and the configs left out, with
    why."""
    points, excluded = [], {}
    for c in summary.get("configs", []):
        if "local_mean_reward_se" not in c:
            raise PQError("summary.json has no local_mean_reward_se: it was written by an older analyze; "
                          "rerun analyze")
        points.append(Point(c["adaptor"], int(c["n_strings"]), float(c["local_mean_log_prior"]),
                            _se(c["local_mean_log_prior_se"]), float(c["local_mean_reward"]),
                            _se(c["local_mean_reward_se"])))
    for s in summary.get("skipped", []):
        if s.get("local_mean_reward") is None:
            excluded[s["adaptor"]] = f"no sampled strings to average ({s['reason']})"
            continue
        points.append(Point(s["adaptor"], int(s["n_strings"]), float(s["local_mean_log_prior"]),
                            _se(s["local_mean_log_prior_se"]), float(s["local_mean_reward"]),
                            _se(s["local_mean_reward_se"]), imh_skipped=True))
    if not points:
        raise PQError("summary.json lists no configuration with sampled strings: nothing to advise on")
    return points, excluded


def kl_plane(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each sampled configuration on the reward-vs-KL plane: KL(q || p+) and its local mean reward, with
    standard errors (summaries written before the KL axis have none: left out)."""
    rows = []
    for c in [*summary.get("configs", []), *summary.get("skipped", [])]:
        if c.get("kl_aligned") is None:
            continue
        rows.append({"adaptor": c["adaptor"], "kl_aligned": c["kl_aligned"],
                     "kl_aligned_se": c["kl_aligned_se"],
                     "mean_reward": c["local_mean_reward"], "mean_reward_se": c["local_mean_reward_se"]})
    return rows


def read_summary(analysis_dir: str | Path) -> dict[str, Any]:
    """summary.json of an analysis directory (PQError when absent or unreadable)."""
    path = Path(analysis_dir) / "summary.json"
    if not path.is_file():
        raise PQError(f"{str(path)!r} does not exist: give the --out folder of `pqtradeoff analyze`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PQError(f"{str(path)!r} is not valid JSON: {err.msg} at line {err.lineno}") from None


# ---------------------------------------------------------------------------------------------- geometry
def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def efficient_hull(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the convex hull's upper-right boundary, by x ascending (so y descending).

    The upper hull (monotone chain, collinear points dropped) from its highest-y vertex (the rightmost one on
    ties) to its rightmost vertex: the reachable points that no other reachable point beats on both axes.
    """
    order = sorted(range(len(x)), key=lambda i: (x[i], y[i]))
    pts = np.column_stack([x, y])
    upper: list[int] = []
    for i in reversed(order):  # right to left, keeping clockwise turns: the upper hull
        while len(upper) >= 2 and _cross(pts[upper[-2]], pts[upper[-1]], pts[i]) <= 0:
            upper.pop()
        if upper and pts[upper[-1]][0] == pts[i][0]:  # same x: keep the higher one only
            if pts[i][1] <= pts[upper[-1]][1]:
                continue
            upper.pop()
        upper.append(i)
    upper.reverse()  # x ascending
    top = max(range(len(upper)), key=lambda k: (y[upper[k]], x[upper[k]]))
    return upper[top:]


def _estimate(weights: list[float], means: list[float], ses: list[float], crit: float) -> Estimate:
    mean = float(sum(w * m for w, m in zip(weights, means, strict=True)))
    se = float(math.sqrt(sum((w * s) ** 2 for w, s in zip(weights, ses, strict=True))))
    return Estimate(mean, se, [mean - crit * se, mean + crit * se])


def _choice(points: list[Point], indices: list[int], weights: list[float], crit: float) -> Choice:
    chosen = [points[i] for i in indices]
    return Choice([p.adaptor for p in chosen], weights,
                  _estimate(weights, [p.reward for p in chosen], [p.reward_se for p in chosen], crit),
                  _estimate(weights, [p.log_prior for p in chosen], [p.log_prior_se for p in chosen], crit))


def _indistinguishable(points: list[Point], choice: Choice, crit: float) -> list[str]:
    """Configs whose reward and log prior both lie within crit * combined s.e. of the choice's."""
    out = []
    for p in points:
        if p.adaptor in choice.adaptors:
            continue
        close = all(abs(value - est.mean) <= crit * math.sqrt(se**2 + est.se**2)
                    for value, se, est in ((p.reward, p.reward_se, choice.mean_reward),
                                           (p.log_prior, p.log_prior_se, choice.mean_log_prior)))
        if close:
            out.append(p.adaptor)
    return out


def _direction(points: list[Point], best: Point) -> str:
    """Where the data point to more reward than the best configuration gives."""
    spec = adaptors.parse(best.adaptor)
    family = [(adaptors.parse(p.adaptor).temperature, p.reward) for p in points
              if adaptors.parse(p.adaptor).family == spec.family]
    temps = sorted({t for t, _ in family})
    words = f"the most reward any configuration gives is {best.reward:.4g}, by {best.adaptor}"
    if len(temps) < 2:
        return words + "; its family was sampled at one temperature only, so the data show no direction"
    slope = float(np.polyfit([t for t, _ in family], [r for _, r in family], 1)[0])
    if slope > 0 and spec.temperature == temps[-1]:
        return words + (f"; in family {spec.family} mean reward rises with temperature ({slope:+.3g} per "
                        f"unit), so temperatures above {temps[-1]:g} may reach it (at a further loss of "
                        "prior likelihood)")
    if slope < 0 and spec.temperature == temps[0]:
        return words + (f"; in family {spec.family} mean reward falls with temperature ({slope:+.3g} per "
                        f"unit), so temperatures below {temps[0]:g} may reach it")
    return words + (f"; within family {spec.family} it peaks inside the sampled temperatures: no sampled "
                    "direction promises more (a different adaptor family, or a more strongly aligned model)")


# ---------------------------------------------------------------------------------------------- advice
def advise(summary: dict[str, Any], min_reward: float | None = None, max_prior_loss: float | None = None,
           reference: str = DEFAULT_REFERENCE, confidence: float = 0.95) -> Advice:
    """The cheapest configuration or two-adaptor mixture that meets exactly one target.

    min_reward: mean reward >= R, at the least loss of mean log prior. max_prior_loss: mean log prior at
    most L nats below the reference configuration's, at the most mean reward.
    """
    if (min_reward is None) == (max_prior_loss is None):
        raise PQError("give exactly one target: --min-reward R or --max-prior-loss L")
    if max_prior_loss is not None and not max_prior_loss >= 0:
        raise PQError(f"max_prior_loss={max_prior_loss!r} must be >= 0 (nats of mean log prior given up)")
    if not 0 < confidence < 1:
        raise PQError(f"confidence={confidence!r} must lie strictly between 0 and 1")
    points, excluded = points_from_summary(summary)
    crit = stats.normal_quantile(0.5 + confidence / 2)
    x = np.array([p.log_prior for p in points])
    y = np.array([p.reward for p in points])
    hull = efficient_hull(x, y)
    base = {
        "confidence": confidence, "frontier": [points[i].adaptor for i in reversed(hull)],
        "imh_skipped_used": [p.adaptor for p in points if p.imh_skipped], "excluded": excluded,
        "kl_plane": kl_plane(summary),
    }
    if min_reward is not None:
        target = {"kind": "min_reward", "value": float(min_reward)}
        choice, single = _for_min_reward(points, hull, x, y, float(min_reward), crit)
    else:
        ref = str(adaptors.parse(reference))
        matches = [p for p in points if p.adaptor == ref]
        if not matches:
            raise PQError(f"reference={reference!r} is not a sampled configuration of this analysis")
        threshold = matches[0].log_prior - float(max_prior_loss)
        target = {"kind": "max_prior_loss", "value": float(max_prior_loss), "reference": ref,
                  "min_mean_log_prior": threshold}
        choice, single = _for_max_prior_loss(points, hull, x, y, threshold, crit)
    base["what_if"] = what_if_answers(summary, target)
    if choice is None:
        best = points[hull[0]]
        return Advice(target, reachable=False, choice=None, best_single=None, indistinguishable=[],
                      direction=_direction(points, best), **base)
    return Advice(target, reachable=True, choice=choice, best_single=single,
                  indistinguishable=_indistinguishable(points, choice, crit), **base)


def what_if_answers(summary: dict[str, Any], target: dict[str, Any]) -> list[dict[str, Any]]:
    """Per family, the never-sampled what-if adaptor that meets `target` on its local means (what sampling
    it would give) at the least cost: the most mean log prior for a reward target, the most reward for a
    prior-loss target. Estimates from the pool, not sampled points."""
    by_family: dict[str, list[dict[str, Any]]] = {}
    for w in summary.get("what_if") or []:
        if w.get("sampled") or w.get("skipped") is not None or w.get("local_mean_reward") is None:
            continue
        by_family.setdefault(w["family"], []).append(w)
    out = []
    for family, entries in sorted(by_family.items()):
        if target["kind"] == "min_reward":
            meets = [w for w in entries if w["local_mean_reward"] >= target["value"]]
            best = max(meets, key=lambda w: w["local_mean_log_prior"]) if meets else None
        else:
            meets = [w for w in entries if w["local_mean_log_prior"] >= target["min_mean_log_prior"]]
            best = max(meets, key=lambda w: w["local_mean_reward"]) if meets else None
        temps = sorted(w["temperature"] for w in entries)
        row = {"family": family, "swept": [temps[0], temps[-1]], "points": len(entries),
               "meets": best is not None}
        if best is not None:
            row |= {k: best[k] for k in ("adaptor", "temperature", "local_mean_reward",
                                         "local_mean_reward_se", "local_mean_log_prior",
                                         "local_mean_log_prior_se", "local_ess")}
        out.append(row)
    return out


def _for_min_reward(points: list[Point], hull: list[int], x: np.ndarray, y: np.ndarray, level: float,
                    crit: float) -> tuple[Choice | None, Choice | None]:
    """Frontier point with mean reward = level (or the highest-log-prior vertex when it already gives
    more)."""
    if level > y[hull[0]]:
        return None, None
    j = max(k for k, i in enumerate(hull) if y[i] >= level)
    if j == len(hull) - 1 or y[hull[j]] == level:
        choice = _choice(points, [hull[j]], [1.0], crit)
    else:
        a, b = hull[j], hull[j + 1]
        lam = float((level - y[b]) / (y[a] - y[b]))
        choice = _choice(points, [a, b], [lam, 1.0 - lam], crit)
    meets = [i for i in range(len(points)) if y[i] >= level]
    best = max(meets, key=lambda i: (x[i], y[i]))
    return choice, _choice(points, [best], [1.0], crit)


def _for_max_prior_loss(points: list[Point], hull: list[int], x: np.ndarray, y: np.ndarray, threshold: float,
                        crit: float) -> tuple[Choice | None, Choice | None]:
    """Frontier point with mean log prior = threshold (or the highest-reward vertex when it keeps more)."""
    if threshold > x[hull[-1]]:
        return None, None
    j = min(k for k, i in enumerate(hull) if x[i] >= threshold)
    if j == 0 or x[hull[j]] == threshold:
        choice = _choice(points, [hull[j]], [1.0], crit)
    else:
        a, b = hull[j - 1], hull[j]
        lam = float((x[b] - threshold) / (x[b] - x[a]))
        choice = _choice(points, [a, b], [lam, 1.0 - lam], crit)
    meets = [i for i in range(len(points)) if x[i] >= threshold]
    best = max(meets, key=lambda i: (y[i], x[i]))
    return choice, _choice(points, [best], [1.0], crit)


# ---------------------------------------------------------------------------------------------- words
def _fmt(e: Estimate) -> str:
    if not math.isfinite(e.se):
        return f"{e.mean:.4g} (s.e. unknown)"
    return f"{e.mean:.4g} [{e.ci[0]:.4g}, {e.ci[1]:.4g}]"


def describe(advice: Advice) -> list[str]:
    """The advice as lines of text for a terminal."""
    t = advice.target
    if t["kind"] == "min_reward":
        lines = [f"target: mean reward >= {t['value']:g}, losing as little mean log prior as possible"]
    else:
        lines = [f"target: mean log prior >= {t['min_mean_log_prior']:.4g} ({t['value']:g} nats below "
                 f"{t['reference']}), with as much mean reward as possible"]
    lines.append("(local means: what sampling each adaptor gives, uncorrected; intervals "
                 f"{advice.confidence:.0%}, from each config's standard errors)")
    if not advice.reachable:
        lines.append(f"out of reach: no configuration or mixture meets it; {advice.direction}")
    else:
        c = advice.choice
        if c.kind == "config":
            lines.append(f"choice: {c.adaptors[0]}")
        else:
            lines.append(f"choice: mix {c.adaptors[0]} (probability {c.weights[0]:.3f}) with {c.adaptors[1]} "
                         f"(probability {c.weights[1]:.3f}): sample each string from the first with that "
                         "probability, else from the second")
            lines.append(f"  to sample it: --adaptor '{mixture_spec(c.adaptors, c.weights)}'")
        lines.append(f"  expected mean reward {_fmt(c.mean_reward)}, mean log prior {_fmt(c.mean_log_prior)}")
        s = advice.best_single
        if c.kind == "mixture" and s is not None:
            lines.append(f"cheapest single configuration meeting it: {s.adaptors[0]} (mean reward "
                         f"{_fmt(s.mean_reward)}, mean log prior {_fmt(s.mean_log_prior)})")
        lines.append("statistically indistinguishable from the choice: "
                     + (", ".join(advice.indistinguishable) or "none"))
    lines.append("frontier (upper-right hull, mean log prior high to low): " + ", ".join(advice.frontier))
    if advice.what_if:
        lines.append("what-if curves (estimated from the pooled corpus, not sampled: sample it to confirm):")
        for w in advice.what_if:
            swept = f"T {w['swept'][0]:g}-{w['swept'][1]:g}, {w['points']} points"
            if not w["meets"]:
                lines.append(f"  {w['family']}: none of its swept adaptors meets it ({swept})")
                continue
            lines.append(f"  {w['family']}: {w['adaptor']} (mean reward {w['local_mean_reward']:.4g} ± "
                         f"{w['local_mean_reward_se']:.2g}, mean log prior {w['local_mean_log_prior']:.4g} ± "
                         f"{w['local_mean_log_prior_se']:.2g}, ESS {w['local_ess']:.0f}; {swept})")
    if advice.imh_skipped_used:
        lines.append("included through their local means although the IMH analysis skipped them: "
                     + ", ".join(advice.imh_skipped_used))
    if advice.excluded:
        lines.append("left out, no sampled strings (reasons in summary.json): " + ", ".join(advice.excluded))
    return lines


def mixture_spec(specs: list[str], weights: list[float]) -> str:
    """The `mix(...)` adaptor spec that samples the advised mixture (probabilities rounded to 3 decimals,
    the last one taking the rest so they sum to 1)."""
    rounded = [round(w, 3) for w in weights[:-1]]
    rounded.append(round(1.0 - sum(rounded), 3))
    return "mix(" + "|".join(f"{w!r}:{s}" for w, s in zip(rounded, specs, strict=True)) + ")"
