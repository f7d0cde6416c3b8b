"""Adaptors against transformers' own warpers: same supports, same renormalized log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from pqtradeoff.errors import PQError
from pqtradeoff.sampling.adaptors import PARAMETER_ORDER, Adaptor, parse, parse_grid
from pqtradeoff.testing import generation_kwargs

SPECS = [
    "ancestral",
    "temperature=0.5",
    "temperature=1.5",
    "top_k=1",
    "top_k=30",
    "top_p=0.9",
    "top_p=0.3",
    "min_p=0.05",
    "typical_p=0.9",
    "typical_p=0.2",
    "epsilon_cutoff=0.0003",
    "epsilon_cutoff=0.05",
    "eta_cutoff=0.0009",
    "eta_cutoff=0.2",
    "temperature=0.75,top_p=0.95",
    "temperature=0.5,top_k=50",
    "temperature=1.5,top_k=40,top_p=0.8",
    "temperature=0.7,min_p=0.1",
    "temperature=1.25,typical_p=0.9",
    "temperature=0.5,eta_cutoff=0.0009",
    "temperature=2.0,epsilon_cutoff=0.001",
    "top_k=20,top_p=0.9,min_p=0.02,typical_p=0.95,epsilon_cutoff=0.0001,eta_cutoff=0.0005",
]

SHAPES = [(200,), (3, 200), (2, 3, 200)]


def reference_log_probs(spec: str, logits: torch.Tensor) -> torch.Tensor:
    """log_softmax of transformers' warpers applied in generate's order, built here from the spec text."""
    values = dict(part.split("=") for part in spec.split(",")) if spec != "ancestral" else {}
    temperature = float(values.get("temperature", 1.0))
    warpers = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if "top_k" in values:
        warpers.append(TopKLogitsWarper(top_k=int(values["top_k"])))
    if "top_p" in values:
        warpers.append(TopPLogitsWarper(top_p=float(values["top_p"])))
    if "min_p" in values:
        warpers.append(MinPLogitsWarper(min_p=float(values["min_p"])))
    if "typical_p" in values:
        warpers.append(TypicalLogitsWarper(mass=float(values["typical_p"])))
    if "epsilon_cutoff" in values:
        warpers.append(EpsilonLogitsWarper(epsilon=float(values["epsilon_cutoff"])))
    if "eta_cutoff" in values:
        warpers.append(EtaLogitsWarper(epsilon=float(values["eta_cutoff"])))
    scores = logits.reshape(-1, logits.shape[-1]).clone()
    for warper in warpers:
        scores = warper(None, scores)
    return torch.log_softmax(scores, dim=-1).reshape(logits.shape)


def lm_like_logits(shape: tuple[int, ...], seed: int, ties: bool = False) -> torch.Tensor:
    """Zipf-shaped logits (p ~ rank^-s, s varying by row) with noise; `ties` rounds them to create exact
    ties."""
    g = torch.Generator().manual_seed(seed)
    s = torch.empty(shape[:-1] + (1,)).uniform_(0.6, 2.5, generator=g)
    u = torch.rand(shape, generator=g)
    logits = -s * torch.log1p(u * shape[-1]) + 0.3 * torch.randn(shape, generator=g)
    return torch.round(logits * 2) / 2 if ties else logits


def assert_same_distribution(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert torch.equal(torch.isfinite(got), torch.isfinite(want)), "supports differ"
    keep = torch.isfinite(want)
    torch.testing.assert_close(got[keep], want[keep], atol=2e-5, rtol=1e-5)


# --------------------------------------------------------------------------------- against transformers
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_log_probs_equal_transformers_warpers(spec: str, shape: tuple[int, ...]) -> None:
    for seed, ties in [(0, False), (1, True)]:
        logits = lm_like_logits(shape, seed, ties)
        assert_same_distribution(parse(spec).log_probs(logits), reference_log_probs(spec, logits))


@pytest.mark.parametrize("spec", SPECS)
def test_log_probs_equal_transformers_on_peaked_and_flat_rows(spec: str) -> None:
    """Edge rows: one dominant token, an exactly flat row, a row with -inf entries already masked."""
    v = 64
    peaked = torch.full((v,), -20.0)
    peaked[7] = 5.0
    flat = torch.zeros(v)
    masked = torch.linspace(-3, 3, v)
    masked[::3] = float("-inf")
    logits = torch.stack([peaked, flat, masked])
    assert_same_distribution(parse(spec).log_probs(logits), reference_log_probs(spec, logits))


@pytest.mark.parametrize("spec",
                         ["temperature=0.5", "top_k=30", "temperature=0.75,top_p=0.95", "typical_p=0.9"])
def test_half_precision_logits_are_scored_in_float32(spec: str) -> None:
    logits = lm_like_logits((4, 300), seed=3)
    half = logits.to(torch.bfloat16)
    assert parse(spec).log_probs(half).dtype == torch.float32
    assert_same_distribution(parse(spec).log_probs(half), reference_log_probs(spec, half.float()))


def test_generation_kwargs_build_the_same_processors_inside_generate() -> None:
    """GenerationConfig(**kwargs) through a model's own config merging builds exactly our distribution,

    even when the model's generation_config sets every sampling parameter (as hub checkpoints do)."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    vocab = 120
    config = GPT2Config(n_layer=1, n_head=1, n_embd=4, vocab_size=vocab, n_positions=8, bos_token_id=0,
                        eos_token_id=1)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.6, top_k=7, top_p=0.5, min_p=0.3, typical_p=0.5,
        epsilon_cutoff=0.01, eta_cutoff=0.01, bos_token_id=0, eos_token_id=1, repetition_penalty=1.3,
    )
    logits = lm_like_logits((5, vocab), seed=4)
    for spec in ["ancestral", "temperature=1.5", "top_k=30", "temperature=0.75,top_p=0.95", "min_p=0.05",
                 "typical_p=0.9", "eta_cutoff=0.0009", "epsilon_cutoff=0.0003",
                 # every warper at once: checks generate's order, not only each warper
                 "temperature=0.8,top_k=20,top_p=0.9,min_p=0.02,typical_p=0.95,epsilon_cutoff=0.0001,eta_cutoff=0.0005"]:
        adaptor = parse(spec)
        prepared, _ = model._prepare_generation_config(GenerationConfig(**generation_kwargs(adaptor)))
        processors = model._get_logits_processor(generation_config=prepared, device="cpu")
        scores = processors(torch.zeros((5, 1), dtype=torch.long), logits.clone())
        assert_same_distribution(adaptor.log_probs(logits), torch.log_softmax(scores, dim=-1))


# ------------------------------------------------------------------------------------ the four views
@pytest.mark.parametrize("spec", SPECS)
def test_log_weights_log_z_and_log_probs_agree(spec: str) -> None:
    adaptor = parse(spec)
    logits = lm_like_logits((2, 3, 150), seed=5)
    step = adaptor.adapt(logits)
    logp = torch.log_softmax(logits.double(), dim=-1)
    keep = adaptor.support(logits)
    want_weights = torch.where(keep, logp / adaptor.temperature, torch.tensor(-math.inf, dtype=torch.float64))
    assert_same_distribution(step.log_weights.double(), want_weights)
    assert_same_distribution(adaptor.log_weights(logits).double(), want_weights)
    torch.testing.assert_close(step.logp.double(), logp, atol=1e-5, rtol=1e-5)
    want_log_z = torch.logsumexp(want_weights, dim=-1, keepdim=True)
    torch.testing.assert_close(step.log_z.double(), want_log_z, atol=1e-5, rtol=1e-5)
    assert_same_distribution(step.log_probs.double(), want_weights - want_log_z)
    assert torch.equal(torch.isfinite(step.log_probs), keep)
    if not adaptor.truncates and adaptor.temperature == 1.0:
        assert torch.allclose(step.log_z, torch.zeros_like(step.log_z), atol=1e-6)
    if adaptor.truncates and adaptor.temperature == 1.0:
        assert bool((step.log_z <= 1e-6).all()), "log mass kept at one step cannot exceed 0 at T=1"


@pytest.mark.parametrize("spec", SPECS)
def test_input_is_never_mutated(spec: str) -> None:
    logits = lm_like_logits((2, 2, 100), seed=6)
    before = logits.clone()
    adaptor = parse(spec)
    adaptor.adapt(logits)
    adaptor.log_probs(logits)
    adaptor.log_weights(logits)
    adaptor.support(logits)
    assert torch.equal(logits, before)


# ---------------------------------------------------------------------------------------------- specs
def test_canonical_str_orders_as_generate_applies() -> None:
    a = parse("eta_cutoff=0.0009, top_p=0.9,temperature=0.5 ,top_k=30")
    assert str(a) == "temperature=0.5,top_k=30,top_p=0.9,eta_cutoff=0.0009"
    assert str(parse("ancestral")) == "temperature=1.0"
    assert str(parse("top_p=0.90")) == "temperature=1.0,top_p=0.9"
    assert parse("ancestral").family == "ancestral" and parse("temperature=0.5,top_k=30").family == "top_k=30"
    assert parse("ancestral").is_identity and not parse("temperature=0.5").is_identity
    assert parse("top_k=3").truncates and not parse("temperature=2").truncates


def test_parse_grid_crosses_temperatures_and_drops_duplicates() -> None:
    grid = parse_grid(["ancestral", "top_k=30", "top_k=30"], temperatures=[0.5, 1.0])
    assert [str(a) for a in grid] == [
        "temperature=0.5", "temperature=1.0", "temperature=0.5,top_k=30", "temperature=1.0,top_k=30",
    ]


adaptors_strategy = st.builds(
    Adaptor,
    temperature=st.floats(0.05, 5.0),
    top_k=st.none() | st.integers(1, 10_000),
    top_p=st.none() | st.floats(0.001, 0.999),
    min_p=st.none() | st.floats(0.001, 1.0),
    typical_p=st.none() | st.floats(0.001, 0.999),
    epsilon_cutoff=st.none() | st.floats(1e-6, 0.5),
    eta_cutoff=st.none() | st.floats(1e-6, 0.5),
)


@settings(max_examples=60, deadline=None)
@given(adaptors_strategy)
def test_canonical_str_round_trips(adaptor: Adaptor) -> None:
    text = str(adaptor)
    assert parse(text) == adaptor
    assert str(parse(text)) == text
    names = [part.split("=")[0] for part in text.split(",")]
    assert names == sorted(names, key=PARAMETER_ORDER.index)


@pytest.mark.parametrize(
    ("spec", "must_name"),
    [
        ("nucleus=0.9", ["nucleus", "0.9"]),
        ("top_k=0", ["top_k", "0"]),
        ("top_k=-3", ["top_k", "-3"]),
        ("top_k=2.5", ["top_k", "2.5"]),
        ("top_p=1.5", ["top_p", "1.5"]),
        ("top_p=0", ["top_p", "0"]),
        ("typical_p=1", ["typical_p", "1"]),
        ("min_p=0", ["min_p", "0"]),
        ("epsilon_cutoff=1", ["epsilon_cutoff", "1"]),
        ("eta_cutoff=-0.1", ["eta_cutoff", "-0.1"]),
        ("temperature=0", ["temperature", "0"]),
        ("temperature=-1", ["temperature", "-1"]),
        ("temperature=inf", ["temperature", "inf"]),
        ("temperature=nan", ["temperature", "nan"]),
        ("top_p=0.9,top_p=0.8", ["top_p", "twice"]),
        ("top_p=abc", ["top_p", "abc"]),
        ("top_p", ["top_p"]),
        ("top_p=", ["top_p"]),
        ("=0.5", ["0.5"]),
        ("ancestral,top_k=5", ["ancestral"]),
        ("top_k=5,,top_p=0.9", ["top_k=5,,top_p=0.9"]),
        ("", ["''"]),
        ("   ", ["empty"]),
    ],
)
def test_bad_specs_raise_one_line_pqerror_naming_parameter_and_value(spec: str, must_name: list[str]) -> None:
    with pytest.raises(PQError) as info:
        parse(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in must_name:
        assert word in message, (word, message)


def test_non_string_spec_is_rejected() -> None:
    with pytest.raises(PQError, match="None"):
        parse(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- properties
logit_rows = st.integers(0, 2**31 - 1).map(lambda seed: lm_like_logits((3, 97), seed, ties=seed % 2 == 0))
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(logit_rows, st.integers(1, 97), st.integers(1, 97), st.floats(0.2, 3.0))
def test_top_k_supports_nest_as_k_grows(logits: torch.Tensor, k1: int, k2: int, t: float) -> None:
    small, large = sorted((k1, k2))
    inner = Adaptor(temperature=t, top_k=small).support(logits)
    outer = Adaptor(temperature=t, top_k=large).support(logits)
    assert bool((inner <= outer).all())
    assert bool((inner.sum(-1) >= small).all())  # ties can only add tokens


@fast
@given(logit_rows, st.floats(0.001, 0.999), st.floats(0.001, 0.999), st.floats(0.2, 3.0))
def test_top_p_supports_nest_as_p_grows(logits: torch.Tensor, p1: float, p2: float, t: float) -> None:
    small, large = sorted((p1, p2))
    inner = Adaptor(temperature=t, top_p=small).support(logits)
    outer = Adaptor(temperature=t, top_p=large).support(logits)
    assert bool((inner <= outer).all())


@fast
@given(logit_rows, adaptors_strategy)
def test_probabilities_sum_to_one_and_one_token_survives(logits: torch.Tensor, adaptor: Adaptor) -> None:
    log_probs = adaptor.log_probs(logits)
    keep = torch.isfinite(log_probs)
    assert bool((keep.sum(-1) >= 1).all())
    total = torch.exp(log_probs.double()).sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)
    assert torch.equal(keep, adaptor.support(logits))
    if adaptor.family == f"top_k={adaptor.top_k}":  # top-k alone keeps at least k tokens (more on ties)
        assert bool((keep.sum(-1) >= min(adaptor.top_k, logits.shape[-1])).all())


@fast
@given(logit_rows)
def test_temperature_one_without_truncation_is_the_identity(logits: torch.Tensor) -> None:
    adaptor = parse("temperature=1.0")
    assert adaptor.is_identity
    want = torch.log_softmax(logits, dim=-1)
    assert torch.equal(adaptor.log_probs(logits), want)
    assert torch.equal(adaptor.log_weights(logits), want)
    assert bool(adaptor.support(logits).all())


def test_tiny_temperature_with_truncation_keeps_the_top_token() -> None:
    """logits / T can overflow to +inf: the kept token must stay kept (no NaN row)."""
    out = parse("temperature=1e-39,top_k=2").log_probs(torch.tensor([5.0, 1.0, -2.0]))
    assert out.tolist() == [0.0, float("-inf"), float("-inf")]


def test_parse_grid_refuses_a_temperature_twice() -> None:
    with pytest.raises(PQError, match="sets a temperature and temperatures are crossed"):
        parse_grid(["temperature=0.5,top_k=30"], [1.0])
    assert [str(a) for a in parse_grid(["top_k=30"], [0.5, 1.0])] == ["temperature=0.5,top_k=30",
                                                                      "temperature=1.0,top_k=30"]
