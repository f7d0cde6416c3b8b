"""`pqtradeoff demo`: one pipeline on exact automata; Monte Carlo estimates agree with the closed forms."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.analysis.results import Summary
from pqtradeoff.demo import make_settings, run_demo
from pqtradeoff.errors import PQError
from pqtradeoff.io import to_json

SMALL = dict(families=["ancestral", "top_k=3", "top_p=0.9", "eta_cutoff=0.0009", "top_n_sigma=1.0"],
             temperatures=[0.5, 1.0, 1.5], dera=[0.5, 1.25],
             num_generations=600, batch_size=600, imh_steps=20_000, corpora=200, corpus_size=600)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary, timings = run_demo(out, make_settings(**SMALL), progress=False)
    return out, summary


def test_outputs_and_exact_fields(small_demo):
    out, summary = small_demo
    for name in ("summary.json", "corpora.parquet", "report.html", "corpus_level.png", "string_level.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == json.loads(to_json(summary.to_json()))
    table = pd.read_parquet(out / "scored")
    assert {"logp_prior", "reward", "logq", "logp_aligned", "log_weight"} <= set(table.columns)
    assert summary.extra["identity_max_abs_error"] < 1e-4
    assert len(summary.configs) + len(summary.skipped) == 17
    for c in summary.configs:
        for key in ("exact_mean_log_prior", "exact_mean_reward", "exact_entropy",
                    "exact_local_mean_log_prior", "exact_local_mean_reward", "exact_local_entropy"):
            assert np.isfinite(c.exact[key]), (c.adaptor, key)


def test_exact_means_exact_through_the_pipeline(small_demo):
    """The automata hand float64 logits to generate and score, so the identity log p + r/beta = log p+ + log Z
    holds to float64 rounding on every finished string, and each stored log-probability equals the automaton's
    own float64 path sum."""
    from pqtradeoff.demo import build_models

    out, summary = small_demo
    assert summary.extra["identity_max_abs_error"] <= 1e-9
    models = build_models(make_settings(**SMALL))
    table = pd.read_parquet(out / "scored").sample(300, random_state=0)
    for row in table.itertuples():
        tokens, prompt = list(row.token_ids), list(row.prompt_token_ids)
        assert abs(row.logp_prior - models.prior.log_prob(tokens, prompt)) <= 1e-10
        assert abs(row.logp_aligned - models.aligned.log_prob(tokens, prompt)) <= 1e-10


def test_skipped_configs_are_reported_not_crashed(small_demo):
    out, summary = small_demo
    skipped = {s.adaptor: s.reason for s in summary.skipped}
    assert "temperature=1.5" in skipped and "normalize" in skipped["temperature=1.5"]
    report = (out / "report.html").read_text()
    assert "temperature=1.5" in report
    assert "NaN" not in json.dumps(summary.to_json())


def test_imh_corrected_means_agree_with_exact_values(small_demo):
    """Within a few Monte Carlo standard errors, for every configuration: the errors are honest."""
    _, summary = small_demo
    z = []
    for c in summary.configs:
        for name in ("log_prior", "reward"):
            z.append((c.series(name).mean - c.exact[f"exact_mean_{name}"]) / c.series(name).se)
    z = np.abs(np.array(z))
    assert z.max() < 5, z
    # the uncorrected (local) means differ from the global target's where the adaptor truncates or tempers
    differ = [abs(c.exact["exact_local_mean_log_prior"] - c.exact["exact_mean_log_prior"])
              for c in summary.configs
              if c.adaptor != "temperature=1.0"]
    assert max(differ) > 0.1


def test_tradeoff_is_visible_at_corpus_level(small_demo):
    """The paper's phenomenon: strings rank-correlate positively, corpora trade likelihood for reward."""
    _, summary = small_demo
    assert summary.string_level.spearman > 0
    assert summary.corpus_level.pearson < -0.5
    assert summary.tradeoff.slope < 0


def test_heavy_tailed_targets_are_skipped_with_a_reason():
    from pqtradeoff.demo import build_models, exact_values
    from pqtradeoff.sampling.adaptors import parse

    models = build_models(make_settings())
    values, reason = exact_values(models.alignment, parse("temperature=1.25,top_k=6"), "global")
    assert values is None and "infinite variance" in reason
    values, reason = exact_values(models.alignment, parse("temperature=1.25"), "global")
    assert values is None and "diverges" in reason
    values, reason = exact_values(models.alignment, parse("temperature=0.75,top_p=0.9"), "global")
    assert reason is None and values["exact_imh_efficiency"] > 0.5


def test_same_seed_same_bytes(tmp_path):
    tiny = dict(SMALL, families=["top_k=3"], temperatures=[0.5, 1.0], num_generations=100, batch_size=100,
                imh_steps=1000, corpora=20, corpus_size=50)
    run_demo(tmp_path / "a", make_settings(**tiny), progress=False)
    run_demo(tmp_path / "b", make_settings(**tiny), progress=False)
    for name in ("corpora.parquet",):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a = pd.read_parquet(tmp_path / "a" / "scored")
    b = pd.read_parquet(tmp_path / "b" / "scored")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("field, value", [("n_words", 1), ("beta", 0.0), ("order", 0), ("num_generations", 1),
                                          ("temperatures", [0.0])])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(PQError, match=field):
        make_settings(**{field: value})


@pytest.mark.parametrize("args, message", [
    (["--n-words", "1"], "n_words"), (["--beta", "-1"], "beta"), (["--order", "0"], "order"),
    (["--target", "banana"], "target"),
])
def test_cli_bad_options_one_line(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "pqtradeoff", "demo", "--out", str(tmp_path), *args],
                         capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error:")


def test_cli_text_file_without_tokens(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = subprocess.run([sys.executable, "-m", "pqtradeoff", "demo", "--out", str(tmp_path / "o"),
                          "--reward", "rarity", "--text",
                          str(empty)], capture_output=True, text=True)
    assert out.returncode == 2 and "no usable tokens" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _z_scores(summary: Summary) -> list[float]:
    return [(c.series(name).mean - c.exact[f"exact_mean_{name}"]) / c.series(name).se for c in summary.configs
            for name in ("log_prior", "reward")]


def test_standard_errors_cover_the_exact_values_across_seeds(tmp_path):
    """Coverage, not one lucky seed: about 95% of |z| should be below 2 if the errors are honest."""
    tiny = dict(families=["ancestral", "top_k=3"], temperatures=[0.5, 1.0], dera=[], num_generations=400,
                batch_size=400,
                imh_steps=8000, corpora=20, corpus_size=100)
    z = []
    for seed in range(1, 6):
        summary, _ = run_demo(tmp_path / str(seed), make_settings(seed=seed, **tiny), progress=False)
        z += _z_scores(summary)
    z = np.abs(np.array(z))
    assert len(z) == 40
    assert np.mean(z < 2) >= 0.8 and z.max() < 5, np.round(z, 2)


def test_exact_values_condition_on_finishing_within_the_token_limit(tmp_path):
    """Strings cut at --max-new-tokens are dropped by the analysis; the exact values must match that law."""
    tiny = dict(families=["ancestral", "top_k=3"], temperatures=[0.5, 1.0], dera=[], num_generations=600,
                batch_size=600,
                imh_steps=8000, corpora=20, corpus_size=100, max_new_tokens=4)
    settings = make_settings(**tiny)
    with pytest.warns(UserWarning, match="excluded [0-9]+ unfinished string"):
        summary, _ = run_demo(tmp_path, settings, progress=False)
    assert summary.input.unfinished > 0
    assert np.abs(_z_scores(summary)).max() < 5
    from pqtradeoff.demo import build_models, cut_probability
    from pqtradeoff.sampling.adaptors import parse

    alignment = build_models(settings).alignment
    for c in summary.configs:  # the closed-form cut-off mass matches the fraction of strings cut
        p = cut_probability(alignment, parse(c.adaptor), 4)
        cut = c.dropped_why.get("unfinished", 0) / c.n_rows
        assert abs(cut - p) < 5 * np.sqrt(p * (1 - p) / c.n_rows) + 1e-9, (c.adaptor, cut, p)


@pytest.mark.parametrize("field, value",
                         [("n_words", 5), ("rarity", 0.3), ("word_cost", 0.5), ("eos_prob", 0.2)])
def test_rarity_options_are_refused_with_the_rare_word_reward(field, value):
    with pytest.raises(PQError, match=f"{field} applies to --reward rarity only"):
        make_settings(**{field: value})
    assert getattr(make_settings(reward="rarity", **{field: value}), field) == value


def test_alignment_fit_recovers_the_demo_beta_and_log_z(small_demo):
    """p+ is exactly p exp(r / beta) / Z here: d = log p+ - log p is linear in r with slope 1/beta (= 1)."""
    _, summary = small_demo
    fit = summary.alignment
    assert fit.defined and fit.n_prompts == 1 and fit.bootstrap_unit == "strings", fit.reason
    assert fit.within_prompt_r > 0.999
    # The identity is exact up to float64 rounding (identity_max_abs_error ~ 1e-14): the bootstrap interval is
    # then as narrow as that rounding and may miss 1 by it, so compare at the rounding's scale.
    assert fit.beta_hat_ci[0] - 1e-9 <= 1.0 <= fit.beta_hat_ci[1] + 1e-9, (fit.beta_hat, fit.beta_hat_ci)
    assert fit.beta_hat_ci[0] - 1e-12 <= fit.beta_hat <= fit.beta_hat_ci[1] + 1e-12
    assert fit.prompts[0].log_z == pytest.approx(summary.extra["log_z"], abs=1e-3)


def test_typical_corpora_lie_on_the_exact_lines(small_demo):
    """Each untruncated global adaptor's corpora centre on its exact line (mean log p_T = -H(p_T), the closed
    forms), within the IMH standard errors; the typical ones are drawn and counted."""
    out, summary = small_demo
    typical = summary.extra["typical_corpora"]
    # T = 1.5 does not normalize here; DeRa's lines have slope -beta/lambda
    assert set(typical) == {"temperature=0.5", "temperature=1.0", "temperature=1.0,dera=0.5",
                            "temperature=1.0,dera=1.25"}
    slopes = {line.label: line.slope for line in summary.exact_lines}
    assert slopes["exact line, dera=0.5"] == pytest.approx(-2.0) and slopes["exact line, T=1"] == -1.0
    for adaptor, t in typical.items():
        assert abs(t["mean_deviation"]) < 4 * t["deviation_se"], (adaptor, t)
        assert 0 < t["typical"] <= t["corpora"] == 200
    assert (out / "typical_corpora.png").is_file()
    assert json.loads((out / "summary.json").read_text())["typical_corpora"] == typical


def test_dera_global_means_lie_on_the_aligned_model_at_beta_over_lambda(small_demo):
    """dera=lambda's IMH (global) means against fsa.align(prior, reward, beta/lambda)'s exact means."""
    _, summary = small_demo
    entries = {e["lambda"]: e for e in summary.extra["dera"]}
    assert set(entries) == {0.5, 1.25}
    for lam, e in entries.items():
        assert e["skipped"] is None and e["beta_over_lambda"] == pytest.approx(1.0 / lam)
        assert e["closed_form_difference"] < 1e-9  # two closed forms: the mixture automaton, the re-alignment
        assert abs(e["z_reward"]) < 4 and abs(e["z_log_prior"]) < 4, e
    # the two lambdas land at different places on the plane: more reward, less prior likelihood at 1.25
    assert entries[1.25]["exact_mean_reward"] > entries[0.5]["exact_mean_reward"]


def test_power_sampling_is_the_global_temperature_target(small_demo):
    _, summary = small_demo
    entries = {e["adaptor"]: e for e in summary.extra["power_sampling"]}
    assert {"temperature=0.5", "temperature=1.0"} <= set(entries)  # T = 1.5 does not normalize here
    for e in entries.values():
        assert e["closed_form_difference"] < 1e-9 and abs(e["z_reward"]) < 4 and abs(e["z_log_prior"]) < 4
    powers = {c.adaptor: c.power_alpha for c in summary.configs}
    assert powers["temperature=0.5"] == 2.0 and powers["temperature=0.5,top_k=3"] is None


def test_kl_axis_against_its_closed_form(small_demo):
    _, summary = small_demo
    z = [(c.kl_aligned - c.exact["exact_kl_aligned"]) / c.kl_aligned_se for c in summary.configs
         if c.kl_aligned_se]
    assert len(z) == len(summary.configs) - 1  # ancestral at T = 1: q = p+, KL 0 exactly, se 0
    assert np.mean(np.abs(z) < 4) >= 0.9
    plain = next(c for c in summary.configs if c.adaptor == "temperature=1.0")
    assert plain.kl_aligned == 0.0 and abs(plain.exact["exact_kl_aligned"]) < 1e-12
