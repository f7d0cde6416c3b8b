"""Mixtures of adaptors (`mix(0.3:spec|0.7:spec)`): parsing, choosing components, sampling, analysis."""

from __future__ import annotations

import numpy as np
import pytest

from pqtradeoff.errors import PQError
from pqtradeoff.sampling import adaptors


def test_a_mixture_parses_to_its_canonical_components_and_round_trips():
    m = adaptors.parse("mix(0.3:top_k=30,temperature=0.75|0.7:ancestral)")
    assert isinstance(m, adaptors.Mixture)
    assert str(m) == "mix(0.3:temperature=0.75,top_k=30|0.7:temperature=1.0)"
    assert adaptors.parse(str(m)) == m and m.family == "mixture"


def test_components_are_chosen_with_their_probabilities():
    m = adaptors.parse("mix(0.25:top_k=3|0.5:ancestral|0.25:temperature=0.5)")
    u = np.random.default_rng(0).random(200_000)
    counts = np.bincount(m.choose(u), minlength=3) / u.size
    assert np.allclose(counts, [0.25, 0.5, 0.25], atol=0.005)
    assert list(m.choose([0.0, 0.2499, 0.25, 0.7499, 0.75, 0.9999])) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("spec, message", [
    ("mix(0.3:top_k=30|0.6:ancestral)", "sum to 1"),
    ("mix(0.5:ancestral|0.5:temperature=1.0)", "names a component twice"),
    ("mix(1:ancestral)", "at least two components"),
    ("mix(a:ancestral|0.5:top_k=3)", "is not probability:spec"),
    ("mix(0.5:ancestral|0.5:mix(0.5:top_k=3|0.5:top_k=4))", "no nested mixtures"),
    ("mix(0.5:ancestral|0.5:top_k=3", "closed by ')'"),
    ("mix(0.5:ancestral|0.5:top_k=0)", "top_k=0"),
])
def test_bad_mixtures_are_one_line_errors(spec, message):
    with pytest.raises(PQError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        adaptors.parse(spec)
    assert "\n" not in str(err.value)


def test_a_mixture_cannot_be_crossed_with_temperatures():
    with pytest.raises(PQError, match="is a mixture"):
        adaptors.parse_grid(["mix(0.5:ancestral|0.5:top_k=3)"], [0.5, 1.0])


def test_sampling_a_mixture_gives_the_weighted_mix_of_its_components(tmp_path):
    """Rows of `mix(0.3:A|0.7:B)` are sampled by A or B, chosen about 30/70 from each row's own stream (the
    recorded component), and the pool's mean length is the weighted mean of A's and B's."""
    import pandas as pd

    from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
    from pqtradeoff.sampling.sampler import mixture_components, row_keys

    from bigram import BigramModel

    model = BigramModel(seed=3, eos_bias=0.3)
    prompts = [PromptRecord(0, "", model.encode_prompt(""))]
    mix = adaptors.parse("mix(0.3:temperature=0.5,top_k=2|0.7:temperature=1.5)")
    grid = [mix, *mix.components]
    generate_corpus(model, prompts, grid, num_generations=3000, max_new_tokens=12, seed=5, batch_size=64,
                    out_dir=tmp_path / "c", settings={}, progress=False, sample_block=3000)
    df = pd.read_parquet(tmp_path / "c")
    rows = df[df["adaptor"] == str(mix)].sort_values("sample_id")
    assert set(rows["component"]) == {0, 1}
    keys = row_keys(5, np.zeros(len(rows), dtype=np.int64), rows["sample_id"].to_numpy(), mix)
    assert (mixture_components(mix, keys) == rows["component"].to_numpy()).all()
    share = (rows["component"] == 0).mean()
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(rows))
    length = rows["token_ids"].map(len)
    expected = sum(w * df[df["adaptor"] == str(c)]["token_ids"].map(len).mean()
                   for w, c in zip(mix.weights, mix.components, strict=True))
    se = np.sqrt(length.var() / len(rows) + sum(
        w ** 2 * df[df["adaptor"] == str(c)]["token_ids"].map(len).var() / 3000
        for w, c in zip(mix.weights, mix.components, strict=True)))
    assert abs(length.mean() - expected) < 4 * se


def test_the_analysis_reports_a_mixture_by_its_pool_means(tmp_path):
    import pandas as pd

    from pqtradeoff.analysis.analyze import run_analysis
    from pqtradeoff.analysis.settings import AnalysisSettings

    rng = np.random.default_rng(0)
    frames = []
    for spec in ("temperature=1.0", "temperature=0.5", "mix(0.5:temperature=1.0|0.5:temperature=0.5)"):
        n = 300
        frames.append(pd.DataFrame({"adaptor": spec, "finished": True, "logq": rng.normal(-5, 1, n),
                                    "logp_aligned": rng.normal(-5, 1, n), "log_weight": rng.normal(0, 0.1, n),
                                    "logp_prior": rng.normal(-6, 1, n), "reward": rng.normal(0.2, 0.1, n),
                                    "prompt_id": 0, "sample_id": np.arange(n)}))
    with pytest.warns(UserWarning, match="a mixture of adaptors"):
        summary = run_analysis(pd.concat(frames, ignore_index=True), tmp_path / "a",
                               AnalysisSettings(corpora=20, corpus_size=50, imh_steps=500, plots=False))
    assert [c.adaptor for c in summary.configs] == ["temperature=0.5", "temperature=1.0"]
    skipped = {s.adaptor: s for s in summary.skipped}
    mix = skipped["mix(0.5:temperature=1.0|0.5:temperature=0.5)"]
    assert "mixture" in mix.reason and mix.n_strings == 300
    assert mix.local_mean_reward == pytest.approx(frames[2]["reward"].mean())


def test_the_advised_mixture_is_a_spec_generate_accepts():
    from pqtradeoff.analysis.advise import mixture_spec

    spec = mixture_spec(["temperature=1.0,top_p=0.9", "temperature=0.75,typical_p=0.9"], [0.5804, 0.4196])
    m = adaptors.parse(spec)
    assert m.weights == (0.58, 0.42) and [str(c) for c in m.components] == [
        "temperature=1.0,top_p=0.9", "temperature=0.75,typical_p=0.9"]
