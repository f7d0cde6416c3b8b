"""The vllm backend without vllm: spec translation and refusals, the missing-extra error, the identity
log Z_t = log p_t(y_t)/T - log q_t(y_t) on the hf backend, and the row assembly of `VLLMModel` against a fake
engine that mimics `vllm.LLM.generate`'s output structure (RequestOutput / CompletionOutput / Logprob) with a
tiny transformers model behind it. Nothing here imports vllm; the real engine has not run (GPU: see
benchmarks/gpu_check.py).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.experiment.settings import ModelSpec
from pqtradeoff.models import vllm_backend as vb
from pqtradeoff.models.decoding import sample_batch
from pqtradeoff.models.hf import HFModel
from pqtradeoff.models.teacher_forcing import continuation_logprobs
from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
from pqtradeoff.sampling import adaptors
from pqtradeoff.sampling.sampler import row_keys

PAPER_FAMILIES = [
    "ancestral",
    "top_k=30",
    "top_k=50",
    "top_p=0.9",
    "top_p=0.95",
    "typical_p=0.9",
    "eta_cutoff=0.0009",
]
PAPER_TEMPERATURES = [0.5, 0.75, 1.0, 1.25, 1.5]
SUPPORTED = [
    "ancestral",
    "temperature=0.7,top_k=5",
    "temperature=1.3,top_p=0.8",
    "min_p=0.1",
    "temperature=0.8,top_k=7,top_p=0.9",
    "temperature=1.2,top_k=6,min_p=0.05",
]
TRUNCATING = SUPPORTED + [
    "typical_p=0.9",
    "eta_cutoff=0.01",
    "epsilon_cutoff=0.02",
    "top_p=0.9,min_p=0.1",
    "temperature=0.6,top_k=9,typical_p=0.8",
]


# ----------------------------------------------------------------------------------- translation
@pytest.mark.parametrize("spec", [str(a) for a in adaptors.parse_grid(PAPER_FAMILIES, PAPER_TEMPERATURES)])
def test_paper_grid_translation(spec):
    a = adaptors.parse(spec)
    if a.typical_p is not None or a.eta_cutoff is not None:
        with pytest.raises(PQError) as err:
            vb.sampling_params_kwargs(a, 123, 256)
        message = str(err.value)
        assert "\n" not in message and "--backend hf" in message and str(a) in message
        return
    kw = vb.sampling_params_kwargs(a, (1 << 64) - 5, 256, stop_token_ids=(2, 7))
    assert kw["temperature"] == a.temperature
    assert kw["top_k"] == (a.top_k if a.top_k is not None else 0)
    assert kw["top_p"] == (a.top_p if a.top_p is not None else 1.0)
    assert kw["min_p"] == 0.0
    assert kw["logprobs"] == 0 and kw["max_tokens"] == 256 and kw["stop_token_ids"] == [2, 7]
    assert kw["seed"] == ((1 << 64) - 5) & ((1 << 63) - 1) and 0 <= kw["seed"] < 1 << 63
    assert (
        kw["repetition_penalty"] == 1.0
        and kw["ignore_eos"] is False
        and kw["extra_args"] == {vb.EXTRA_ARGS_KEY: str(a)}
    )


def test_paper_grid_counts():
    grid = adaptors.parse_grid(PAPER_FAMILIES, PAPER_TEMPERATURES)
    assert sum(vb.refusal(a) is None for a in grid) == 25 and len(grid) == 35  # typical and eta: 10 refused


@pytest.mark.parametrize(
    "spec,word",
    [
        ("typical_p=0.9", "typical_p"),
        ("eta_cutoff=0.0009", "eta_cutoff"),
        ("epsilon_cutoff=0.001", "epsilon_cutoff"),
        ("temperature=0.5,top_k=30,typical_p=0.9", "typical_p"),
        ("top_p=0.9,min_p=0.1", "min_p before top_p"),
        ("top_k=5,top_p=0.9,min_p=0.1", "min_p before top_p"),
        ("temperature=2.5", "temperature"),
        ("temperature=1e-06", "temperature"),
    ],
)
def test_refusals_are_one_line_and_point_to_hf(spec, word):
    with pytest.raises(PQError) as err:
        vb.check_supported(spec)
    message = str(err.value)
    assert "\n" not in message and word in message and "--backend hf" in message and "vllm" in message


@pytest.mark.parametrize("name", [n for n in adaptors.TRUNCATIONS if n not in vb.VLLM_TRUNCATIONS])
def test_every_truncation_outside_the_allow_list_is_refused(name):
    """An allow-list: each `Adaptor` truncation vLLM is not known to reproduce (today's and any added later)
    is refused, not passed through."""
    parameter = next(p for p in adaptors.PARAMETERS if p.name == name)
    value = 0.5 if parameter.kind is float else 3
    with pytest.raises(PQError, match=name):
        vb.check_supported(f"{name}={value}")


@pytest.mark.parametrize("spec", SUPPORTED + ["temperature=2.0", "temperature=1e-05", "top_k=1", "min_p=1.0"])
def test_supported_specs_translate_back_to_the_same_adaptor(spec):
    kw = vb.sampling_params_kwargs(spec, 0, 3)
    assert _adaptor_of(SimpleNamespace(**kw)) == adaptors.parse(spec)


def test_bad_max_new_tokens():
    with pytest.raises(PQError, match="max_new_tokens=0"):
        vb.sampling_params_kwargs("ancestral", 0, 0)


def test_scoring_params_and_engine_kwargs():
    kw = vb.scoring_params_kwargs()
    assert kw["prompt_logprobs"] == 0 and kw["max_tokens"] == 1 and kw["flat_logprobs"] is False
    engine = vb.engine_kwargs("bfloat16", 4096, 3, 0.8)
    assert engine["logprobs_mode"] == "processed_logprobs" and engine["generation_config"] == "vllm"
    assert engine["max_model_len"] == 4096 and "max_model_len" not in vb.engine_kwargs(
        "bfloat16", None, 3, 0.8
    )


def test_batch_invariance_env(monkeypatch):
    monkeypatch.delenv("VLLM_BATCH_INVARIANT", raising=False)
    vb.enable_batch_invariance()
    assert vb.os.environ["VLLM_BATCH_INVARIANT"] == "1"
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    with pytest.raises(PQError, match="VLLM_BATCH_INVARIANT='0'"):
        vb.enable_batch_invariance()


# ------------------------------------------------------------------------------------- missing extra
def test_missing_vllm_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(PQError) as err:
        vb.require_vllm()
    assert "pqtradeoff[vllm]" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PQError, match=r"pqtradeoff\[vllm\]"):
        vb.VLLMModel(object(), end_ids=(2,))
    from pqtradeoff.models.registry import load_causal

    with pytest.raises(PQError, match=r"pqtradeoff\[vllm\]"):
        load_causal(ModelSpec(name="some/model", backend="vllm"))


def test_module_imports_and_translates_with_vllm_blocked(monkeypatch):
    """No module-level vllm import: with `import vllm` made to fail, the module still loads and translates."""
    import importlib

    monkeypatch.setitem(sys.modules, "vllm", None)
    reloaded = importlib.reload(vb)
    assert reloaded.sampling_params_kwargs("top_k=5", 1, 2)["top_k"] == 5


# ------------------------------------------------------------------------------ the identity on hf
@pytest.mark.usefixtures("one_thread")
def test_log_weight_identity_on_the_hf_backend(tmp_path, tiny_hf):
    """log Z_t == log p_t(y_t)/T - log q_t(y_t) per token and per string, for every family (truncations
    too)."""
    lm = HFModel(str(tiny_hf.llama), device="cpu")
    prompts = [
        PromptRecord(i, t, lm.encode_prompt(t)) for i, t in enumerate(["hello world", "tell me a story"])
    ]
    grid = [adaptors.parse(s) for s in TRUNCATING]
    result = generate_corpus(
        lm,
        prompts,
        grid,
        num_generations=3,
        max_new_tokens=8,
        seed=5,
        batch_size=4,
        out_dir=tmp_path / "c",
        settings={},
        save_token_logprobs=True,
        progress=False,
    )
    df = pd.read_parquet(result.out_dir)
    assert len(df) == len(grid) * 2 * 3
    truncated_steps = 0
    for row in df.itertuples():
        t = adaptors.parse(row.adaptor).temperature
        logq, logp, logz = (
            np.asarray(x, dtype=np.float64) for x in (row.token_logq, row.token_logp_aligned, row.token_log_z)
        )
        assert np.all(np.isfinite(logq))  # the sampled token is always in the kept support
        gap = np.abs(logz - (logp / t - logq))
        assert np.all(gap <= 2e-5 * (1 + np.abs(logp / t))), (row.adaptor, gap.max())
        assert row.log_weight == pytest.approx(row.logp_aligned / t - row.logq, abs=1e-4)
        truncated_steps += int(np.sum(logz < -1e-3))
    assert truncated_steps > 10  # the identity was exercised where the adaptor drops mass (log Z_t < 0)


# ------------------------------------------------------------------------------ fake vLLM engine
@dataclass
class Logprob:  # vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput (the fields we read)
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput (the fields we read)
    request_id: str
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool = True


class FakeSamplingParams(SimpleNamespace):
    """vllm.SamplingParams: the given keywords over vLLM 0.33.0's defaults for the fields the fake reads."""

    def __init__(self, **kwargs):
        defaults = dict(
            n=1,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            seed=None,
            max_tokens=16,
            stop_token_ids=None,
            logprobs=None,
            prompt_logprobs=None,
        )
        super().__init__(**(defaults | kwargs))


def _adaptor_of(params) -> adaptors.Adaptor:
    """The adaptor a vLLM SamplingParams samples, read back from its fields (independent of our
    translation)."""
    return adaptors.Adaptor(
        temperature=params.temperature,
        top_k=params.top_k or None,
        top_p=None if params.top_p == 1.0 else params.top_p,
        min_p=None if params.min_p == 0.0 else params.min_p,
    )


class FakeLLM:
    """`vllm.LLM.generate` on a tiny transformers model: sampling requests go through our own sampler
    (keyed by
    the request's seed) and report the processed logprob of the chosen token; prompt_logprobs requests report
    the raw log-probability of every prompt token after the first. Each logprob dict also carries a decoy
    entry for another token, as vLLM's top-k entries would."""

    def __init__(self, lm: HFModel):
        self.lm = lm
        self.calls: list[int] = []

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert use_tqdm is False and len(prompts) == len(sampling_params)
        self.calls.append(len(prompts))
        return [
            self._one(i, p["prompt_token_ids"], sp)
            for i, (p, sp) in enumerate(zip(prompts, sampling_params, strict=False))
        ]

    def _decoyed(self, token: int, logprob: float) -> dict[int, Logprob]:
        return {token: Logprob(logprob, rank=1), (token + 1) % self.lm.vocab_size: Logprob(99.0, rank=2)}

    def _one(self, i, ids, sp) -> RequestOutput:
        if sp.prompt_logprobs is not None:
            assert sp.prompt_logprobs == 0 and sp.max_tokens == 1
            logp = continuation_logprobs(self.lm, [ids[:1]], [ids[1:]])[0]
            entries = [None] + [self._decoyed(t, float(v)) for t, v in zip(ids[1:], logp, strict=False)]
            done = CompletionOutput(0, "", [int(self.lm.eos_token_id)], None, None, "length")
            return RequestOutput(str(i), list(ids), entries, [done])
        assert sp.logprobs == 0 and sp.n == 1 and tuple(sp.stop_token_ids) == self.lm.end_ids()
        with torch.inference_mode():
            row = sample_batch(
                self.lm, _adaptor_of(sp), [ids], np.array([sp.seed], dtype=np.uint64), sp.max_tokens
            )[0]
        logprobs = [self._decoyed(t, q) for t, q in zip(row.token_ids, row.token_logq, strict=False)]
        reason = "stop" if row.finished else "length"
        return RequestOutput(
            str(i), list(ids), None, [CompletionOutput(0, "", row.token_ids, None, logprobs, reason)]
        )


@pytest.mark.usefixtures("one_thread")
def test_vllm_model_rows_equal_the_hf_backend(tiny_hf):
    """Row assembly: tokens and logq as vLLM reports them, logp_aligned from the prompt-logprobs pass,
    log_weight by the identity - equal to what the hf backend records for the same rows."""
    lm = HFModel(str(tiny_hf.llama), device="cpu")
    fake = FakeLLM(lm)
    model = vb.VLLMModel(fake, end_ids=lm.end_ids(), make_params=FakeSamplingParams, tokenizer_front=lm)
    prompts = [lm.encode_prompt(t) for t in ["hello world", "tell me a story about the moon", "why"]]
    for spec in SUPPORTED:
        a = adaptors.parse(spec)
        keys = row_keys(9, np.arange(3), np.zeros(3, dtype=np.int64), a)
        rows = model.sample([vb.SampleRequest(p, a, int(k), 7) for p, k in zip(prompts, keys, strict=False)])
        assert fake.calls[-2:] == [3, 3]  # one generate call, one scoring call, each batched
        with torch.inference_mode():
            expected = sample_batch(
                lm, a, prompts, np.array([vb.vllm_seed(k) for k in keys], dtype=np.uint64), 7
            )
        for got, want in zip(rows, expected, strict=False):
            assert got.token_ids == want.token_ids and got.finished == want.finished
            np.testing.assert_allclose(got.token_logq, want.token_logq, atol=1e-5)
            assert got.logq == math.fsum(got.token_logq)
            np.testing.assert_allclose(got.token_logp_aligned, want.token_logp_aligned, atol=1e-4)
            np.testing.assert_allclose(got.token_log_z, want.token_log_z, atol=2e-4)
            assert got.logp_aligned == pytest.approx(want.logp_aligned, abs=1e-3)
            assert got.log_weight == pytest.approx(want.log_weight, abs=1e-3)
    assert any(r.finished for r in rows) or any(not r.finished for r in rows)
    assert model.sample([]) == []


@pytest.mark.usefixtures("one_thread")
def test_vllm_model_prior_scoring(tiny_hf):
    lm = HFModel(str(tiny_hf.prior), device="cpu")
    model = vb.VLLMModel(
        FakeLLM(lm), end_ids=lm.end_ids(), make_params=FakeSamplingParams, tokenizer_front=lm
    )
    prompts = [lm.encode_prompt("hello"), lm.encode_prompt("tell me"), lm.empty_context()]
    conts = [lm.encode_continuation("the cat sat"), [], lm.encode_continuation("a dog") + [lm.eos_token_id]]
    got = model.logprobs(prompts, conts)
    want = continuation_logprobs(lm, prompts, conts)
    assert [len(g) for g in got] == [3, 0, 3]
    for g, w in zip(got, want, strict=False):
        np.testing.assert_allclose(g, w, atol=1e-4)
    with pytest.raises(PQError, match="prompt 0 is empty"):
        model.logprobs([[]], [[5]])
    with pytest.raises(PQError, match="2 prompts for 1 continuations"):
        model.logprobs([[1], [1]], [[5]])


def test_vllm_model_tokenization_and_token_steps():
    front = SimpleNamespace(tokenizer_key="k", encode_prompt=lambda s: [1, 2], eos_token_id=2)
    model = vb.VLLMModel(object(), end_ids=(2, 9), make_params=SimpleNamespace, tokenizer_front=front)
    assert model.tokenizer_key == "k" and model.encode_prompt("x") == [1, 2] and model.end_ids() == (2, 9)
    for method in (model.start, model.step, model.keep, model.continuation_logits):
        with pytest.raises(PQError, match="--backend hf"):
            method([[1]])
    with pytest.raises(PQError, match="no end-of-string id"):
        vb.VLLMModel(object(), end_ids=(), make_params=SimpleNamespace)


def test_output_shape_errors():
    ids = [1, 5, 6]
    out = RequestOutput("0", ids, [None, {5: Logprob(-1.0)}], [])
    with pytest.raises(PQError, match="prompt_logprobs=0"):
        vb.prompt_tail_logprobs(out, 1)
    good = RequestOutput("0", ids, [None, {5: Logprob(-1.0)}, {6: Logprob(-2.0), 7: Logprob(-0.5)}], [])
    assert vb.prompt_tail_logprobs(good, 1) == [-1.0, -2.0] and vb.prompt_tail_logprobs(good, 2) == [-2.0]
    with pytest.raises(PQError, match="logprobs=0"):
        vb.sample_logprobs(CompletionOutput(0, "", [5], None, None))
    with pytest.raises(PQError, match="1 logprobs for 2 tokens"):
        vb.sample_logprobs(CompletionOutput(0, "", [5, 6], None, [{5: Logprob(-1.0)}]))


@pytest.mark.parametrize(
    "which,template,chat",
    [
        ("llama", None, False),
        ("llama", "Human: {prompt} Assistant:", False),
        ("llama", None, True),
        ("gpt2", None, False),
    ],
)
def test_tokenizer_front_tokenizes_as_the_hf_backend(tiny_hf, which, template, chat):
    """vLLM gets the token ids the hf backend would give: same template, BOS, end ids, key and context."""
    path = str(getattr(tiny_hf, which))
    front = vb.TokenizerFront(path, template, chat)
    lm = HFModel(path, device="cpu", template=template, chat_template=chat)
    for text in ["hello world", "", "tell me a story"]:
        assert front.encode_prompt(text) == lm.encode_prompt(text)
        assert front.encode_continuation(text) == lm.encode_continuation(text)
    ids = lm.encode_continuation("the cat sat") + [lm.eos_token_id]
    assert front.decode(ids) == lm.decode(ids) and front.empty_context() == lm.empty_context()
    assert front.eos_token_ids == lm.end_ids() and front.tokenizer_key == lm.tokenizer_key
    assert front.vocab_size == lm.vocab_size and front.max_length == lm.max_length
