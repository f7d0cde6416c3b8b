"""A vLLM backend (GPU) for generation and teacher-forced scoring, at the request level. NOT YET RUN ON A GPU.

Pinned version: vllm==0.33.0 (`pip install -e ".[vllm]"`). Everything below was read in that version's source
(the PyPI sdist vllm-0.33.0.tar.gz); the file/function is named where a claim rests on it. vllm is imported
lazily (`require_vllm`), so this module, the spec translation and the row assembly import and test without it.

Which adaptors vLLM reproduces exactly (transformers' `generate` order is temperature, top_k, top_p, min_p,
typical, epsilon, eta; see adaptors.py):

- vllm/v1/sample/sampler.py, `Sampler.forward` / `Sampler.sample`: logits -> float32 -> (allowed ids, bad
  words, non-argmax-invariant processors, penalties; all off for us) -> `apply_temperature` (logits / T) ->
  the argmax-invariant logits processors, i.e. the built-in `MinPLogitsProcessor` and then any custom
  processor that declares itself argmax-invariant -> `TopKTopPSampler` (top-k, then top-p) -> sample. So vLLM
  applies min_p AFTER temperature (as transformers) but BEFORE top-k/top-p (transformers: after).
- min_p (vllm/v1/sample/logits_processor/builtin.py, `MinPLogitsProcessor.apply`): softmax of the
  temperature-scaled logits, drop p < min_p * max p - transformers' `MinPLogitsWarper` on the same input.
  Truncation keeps the argmax and renormalizes, which leaves the ratio p/max p unchanged, so min_p computed
  before or after top-k keeps the same set: both are upper sets of the logits and the result is their
  intersection (if min_p keeps fewer than k tokens, vLLM's k-th value is -inf and top-k drops nothing). min_p
  with top_k: supported. min_p with top_p: top-p's cumulative mass is taken over a renormalized distribution,
  which min_p-first shrinks, so vLLM keeps a different (smaller) set than transformers: REFUSED.
- top_k / top_p (vllm/v1/sample/ops/topk_topp_sampler.py, `apply_top_k_top_p_pytorch`, and the Triton
  `apply_top_k_top_p_triton` it dispatches to on GPU, "top-k first, then top-p on the remaining"): top-k keeps
  logits >= the k-th largest (ties kept, as `TopKLogitsWarper`); top-p sorts ascending and drops tokens whose
  cumulative probability is <= 1 - top_p, keeping the last (as `TopPLogitsWarper`). Same definitions, same
  order, both after temperature: supported, alone and together. The Triton kernel finds the top-p cut by a
  pivot search in float32, so a token whose cumulative mass lies within float rounding of the cut may be kept
  by one and dropped by the other; the GPU check measures it.
- typical_p, epsilon_cutoff, eta_cutoff: no SamplingParams field. A custom batch-level processor
  (`vllm.v1.sample.logits_processor.LogitsProcessor`, per-request arguments from `SamplingParams.extra_args`)
  declared argmax-invariant runs after temperature and after the built-in min_p, before top-k/top-p (the
  order above). It could therefore reproduce transformers exactly only by running the whole truncation chain
  itself (top_k, top_p, min_p, typical, epsilon, eta, with vLLM's own top_k/top_p/min_p off); no such
  processor is written yet and none could be run here, so these are REFUSED with a pointer to `--backend hf`.
- temperature: vLLM requires 0 <= T <= 2 (`SamplingParams._verify_args`) and samples greedily below 1e-5
  (`_SAMPLING_EPS`): T > 2 and T < 1e-5 are REFUSED.

Fields relied on (vllm 0.33.0):
- `LLM(..., logprobs_mode="processed_logprobs")` (vllm/config/model.py `LogprobsMode`: raw_logprobs,
  processed_logprobs, raw_logits, processed_logits): the returned sample logprobs are log_softmax of the
  logits
  after temperature and every truncation (`TopKTopPSampler.forward_native`), i.e. log q_t(y_t). This mode also
  disables the FlashInfer sampler (it cannot return processed logprobs). Prompt logprobs ignore the mode's
  processed/raw part: they are log_softmax of the raw float32 logits (gpu_model_runner
  `_get_prompt_logprobs_dict`), i.e. the model at T = 1.
- `SamplingParams(logprobs=0)`: the chosen token's logprob only (top-0 plus the sampled token), one dict
  {token_id: Logprob(logprob=...)} per generated token in `CompletionOutput.logprobs`.
- `SamplingParams(prompt_logprobs=0)`: `RequestOutput.prompt_logprobs` is a list as long as the prompt, None
  at position 0, then {prompt_token: Logprob} for every later position (`gather_logprobs` gathers the actual
  token, the top-0 adds none). `flat_logprobs=False` keeps this list-of-dicts form.
- `seed`: a per-request `torch.Generator` (gpu_model_runner: `generator.manual_seed(seed)`); its exponential
  noise for a row depends only on the seed and the step (`random_sample`), so with batch-invariant logits a
  row's tokens do not depend on its batch. vLLM's noise is not our inverse-CDF stream: tokens differ from
  the hf backend's for the same row key (the recorded quantities are what must agree).
- `stop_token_ids` (our model's end ids) and `ignore_eos=False`: the stop token is the last of
  `CompletionOutput.token_ids` (`check_stop` runs after it is appended); `finished` is read as the hf backend
  does (last token is an end id), not from `finish_reason`.
- `top_k=0` turns top-k off in this version (-1 also accepted); `top_p=1.0`, `min_p=0.0` are off.
- `generation_config="vllm"` on the engine: the checkpoint's generation_config (top_k=50 and friends) is
  never merged into our requests.
- `VLLM_BATCH_INVARIANT=1` (vllm/envs.py): batch-invariant kernels, so a row's logits do not depend on
  which rows share its batch. What is bit-reproducible: a row's tokens and log-probabilities across batch
  compositions and reruns on the same GPU, vLLM version and settings. What is not: results across GPU
  models, vLLM/CUDA versions or tensor-parallel sizes, and equality with the hf backend's numbers (other
  kernels: agreement within float tolerance only).

Recorded quantities. vLLM returns only log q_t(y_t). Since q_t(y) = p_t(y)^(1/T) / Z_t on the kept support
and the sampled token is always kept, log Z_t = log p_t(y_t) / T - log q_t(y_t) (docs/backends.md proves it
and tests/models/test_vllm_backend checks it on the hf backend). So `logp_aligned` comes from one prompt-logprobs
pass of the aligned model over prompt + continuation, and `log_weight = logp_aligned / T - logq`, per token
and summed. Prior scoring (`logprobs`) is the same prompt-logprobs pass on the prior.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pqtradeoff.errors import PQError
from pqtradeoff.models.base import SCORE_BATCH, SCORE_BATCH_TOKENS, SampledRow, SampleRequest
from pqtradeoff.models.hf import HFTokenization
from pqtradeoff.sampling.adaptors import TRUNCATIONS, Adaptor, BestOfN, parse

VLLM_VERSION = "0.33.0"
EXTRA_HINT = 'pip install -e ".[vllm]" (the pqtradeoff[vllm] extra, vllm==0.33.0, on a machine with a GPU)'
#: vLLM's own limits on temperature (`SamplingParams._verify_args`; greedy below `_SAMPLING_EPS`).
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-5, 2.0
#: The key under which each request names its adaptor in `SamplingParams.extra_args` (read by nothing in
#: vLLM; recorded so a future custom logits processor, or a log, can find it).
EXTRA_ARGS_KEY = "pqtradeoff_adaptor"
HF_HINT = "use --backend hf for it"
TOKEN_STEPS = ("the vllm backend serves whole requests (sample, logprobs), not token steps (start, step, "
               "keep, continuation_logits): call sample or logprobs, or use --backend hf for token steps")


def require_vllm() -> Any:
    """The vllm module, or a one-line PQError naming the extra when it is not installed."""
    try:
        import vllm
    except ImportError:
        raise PQError(f"vllm is not installed, and backend='vllm' needs it: {EXTRA_HINT}") from None
    return vllm


# ----------------------------------------------------------------------------------- spec translation
#: The truncations vLLM's own SamplingParams apply exactly as transformers' warpers do (besides temperature).
#: An allow-list: a truncation added to `Adaptor` is refused here until it is translated and tested.
VLLM_TRUNCATIONS = ("top_k", "top_p", "min_p")


def refusal(adaptor: Adaptor | str) -> str | None:
    """Why vLLM cannot reproduce this adaptor exactly as transformers applies it, or None when it can."""
    a = parse(adaptor)
    if isinstance(a, BestOfN):  # its candidates are the base adaptor's rows
        return refusal(a.base)
    if isinstance(a, Adaptor) and a.dera is not None:
        return f"the vllm backend decodes one model, and {a} (DeRa) decodes the prior beside it"
    missing = [n for n in TRUNCATIONS if getattr(a, n) is not None and n not in VLLM_TRUNCATIONS]
    if missing:
        return (
            f"vLLM has no {missing[0]} (no exact custom logits processor for it is written yet), "
            f"so it cannot sample {a}"
        )
    if a.min_p is not None and a.top_p is not None:
        return (
            f"vLLM applies min_p before top_p (transformers after), which keeps a different set of "
            f"tokens, so it cannot sample {a}"
        )
    if not MIN_TEMPERATURE <= a.temperature <= MAX_TEMPERATURE:
        return (
            f"vLLM accepts temperature in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}] (greedy below), so it "
            f"cannot sample {a}"
        )
    return None


def check_supported(adaptor: Adaptor | str) -> Adaptor:
    """The adaptor, or a one-line PQError saying why the vllm backend refuses it and to use --backend hf."""
    a = parse(adaptor)
    why = refusal(a)
    if why is not None:
        raise PQError(f"adaptor {str(a)!r} under backend='vllm': {why}; {HF_HINT}")
    return a


def vllm_seed(key: int) -> int:
    """A row key (uint64, `sampler.row_keys`) as a vLLM seed: its low 63 bits (a non-negative int64)."""
    return int(key) & ((1 << 63) - 1)


def sampling_params_kwargs(
    adaptor: Adaptor | str, seed: int, max_new_tokens: int, stop_token_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments that sample exactly this adaptor, seeded per row.

    Every parameter that could change the distribution is stated, off ones by their off value (top_k=0,
    top_p=1.0, min_p=0.0, no penalties), and `logprobs=0` returns the chosen token's processed logprob.
    Refused adaptors raise PQError (`check_supported`).
    """
    a = check_supported(adaptor)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise PQError(f"max_new_tokens={max_new_tokens!r} is out of range: need an integer >= 1")
    return {
        "n": 1,
        "temperature": a.temperature,
        "top_k": a.top_k if a.top_k is not None else 0,
        "top_p": a.top_p if a.top_p is not None else 1.0,
        "min_p": a.min_p if a.min_p is not None else 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "seed": vllm_seed(seed),
        "max_tokens": max_new_tokens,
        "min_tokens": 0,
        "stop_token_ids": [int(i) for i in stop_token_ids],
        "ignore_eos": False,
        "logprobs": 0,
        "flat_logprobs": False,
        "detokenize": False,
        "skip_special_tokens": False,
        "extra_args": {EXTRA_ARGS_KEY: str(a)},
    }


def scoring_params_kwargs() -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments of a teacher-forced scoring request: the prompt's own log-probs
    (prompt_logprobs=0: the actual token at every position but the first), one greedy token that is
    ignored."""
    return {
        "n": 1,
        "temperature": 0.0,
        "max_tokens": 1,
        "prompt_logprobs": 0,
        "logprobs": None,
        "flat_logprobs": False,
        "detokenize": False,
    }


def engine_kwargs(
    dtype: str, max_model_len: int | None, seed: int, gpu_memory_utilization: float
) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments (besides the model) that the recorded quantities rely on."""
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "seed": seed,
        "logprobs_mode": "processed_logprobs",
        "generation_config": "vllm",
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    return kwargs


def enable_batch_invariance() -> None:
    """Set VLLM_BATCH_INVARIANT=1 before the engine starts (vllm reads it from the environment); refuse an
    explicit 0, which would make a row's tokens depend on its batch."""
    value = os.environ.get("VLLM_BATCH_INVARIANT")
    if value is not None and value.strip() not in ("1", ""):
        raise PQError(
            f"VLLM_BATCH_INVARIANT={value!r}: the vllm backend needs 1 (batch-independent rows); "
            "unset it or set it to 1"
        )
    os.environ["VLLM_BATCH_INVARIANT"] = "1"


# ------------------------------------------------------------------------------------------- requests
def sample_logprobs(completion: Any) -> list[float]:
    """The chosen tokens' log-probabilities from a `CompletionOutput` requested with logprobs=0."""
    if completion.logprobs is None:
        raise PQError("vllm returned no sample logprobs: the request must set logprobs=0")
    if len(completion.logprobs) != len(completion.token_ids):
        raise PQError(
            f"vllm returned {len(completion.logprobs)} logprobs for {len(completion.token_ids)} tokens"
        )
    return [
        float(step[int(t)].logprob) for t, step in zip(completion.token_ids, completion.logprobs, strict=True)
    ]


def prompt_tail_logprobs(output: Any, prompt_length: int) -> list[float]:
    """Log-probabilities of the tokens after the first `prompt_length` ones, from a `RequestOutput` requested
    with prompt_logprobs=0 over prompt + continuation (position i predicts token i; position 0 is None)."""
    ids, entries = list(output.prompt_token_ids), output.prompt_logprobs
    if entries is None or len(entries) != len(ids):
        raise PQError(
            "vllm returned no prompt logprobs for every position: the request must set prompt_logprobs=0"
        )
    if prompt_length < 1:
        raise PQError("prompt is empty: vLLM scores a token only after at least one context token")
    return [float(entries[i][ids[i]].logprob) for i in range(prompt_length, len(ids))]


class VLLMModel:
    """An offline `vllm.LLM` engine serving the request-level interface: `sample(requests)` and
    `logprobs(prompts, continuations)`. Tokenization (templates, BOS, end ids) is the hf backend's, from the
    same checkpoint's tokenizer, so both backends see identical token ids."""

    def __init__(
        self,
        engine: Any,
        *,
        end_ids: Sequence[int],
        make_params: Callable[..., Any] | None = None,
        tokenizer_front: Any = None,
    ) -> None:
        if not end_ids:
            raise PQError("the vllm model has no end-of-string id: strings could never end")
        self.engine = engine
        self.end_ids_ = tuple(int(i) for i in end_ids)
        self.make_params = make_params if make_params is not None else require_vllm().SamplingParams
        self.front = tokenizer_front

    # ----------------------------------------------------------------------------------- tokenization
    def end_ids(self) -> tuple[int, ...]:
        return self.end_ids_

    def __getattr__(self, name: str) -> Any:
        """Tokenization (`encode_prompt`, `decode`, `tokenizer_key`, ...) is the tokenizer front's."""
        front = self.__dict__.get("front")
        if front is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(front, name)

    def start(self, *args: Any, **kwargs: Any) -> Any:
        """The token-step interface is not served: one line saying so (not an AttributeError)."""
        raise PQError(TOKEN_STEPS)

    step = keep = continuation_logits = start

    # ---------------------------------------------------------------------------------------- requests
    def _generate(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        outputs = self.engine.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False
        )
        if len(outputs) != len(prompts):
            raise PQError(f"vllm returned {len(outputs)} outputs for {len(prompts)} requests")
        return outputs

    def sample(self, requests: Sequence[SampleRequest], *, batch_size: int | None = None) -> list[SampledRow]:
        """One `SampledRow` per request: tokens, finished, and logq / logp_aligned / log_weight per token and
        summed (float64, correctly rounded sums, as the hf backend). vLLM schedules its own batches, so
        `batch_size` is ignored."""
        if not requests:
            return []
        params = [
            self.make_params(**sampling_params_kwargs(r.adaptor, r.key, r.max_new_tokens, self.end_ids_))
            for r in requests
        ]
        completions = [
            out.outputs[0] for out in self._generate([r.prompt_token_ids for r in requests], params)
        ]
        tokens = [[int(t) for t in c.token_ids] for c in completions]
        token_logp = self.logprobs([r.prompt_token_ids for r in requests], tokens)
        rows = []
        for r, c, ids, logp_array in zip(requests, completions, tokens, token_logp, strict=True):
            logq, logp = sample_logprobs(c), logp_array.tolist()
            temperature = parse(r.adaptor).temperature
            log_z = [p / temperature - q for p, q in zip(logp, logq, strict=True)]
            finished = bool(ids) and ids[-1] in self.end_ids_
            rows.append(SampledRow(ids, finished, math.fsum(logq), math.fsum(logp), math.fsum(log_z),
                                   logq, logp, log_z))
        return rows

    def logprobs(self, prompts: Sequence[list[int]], continuations: Sequence[list[int]], *,
                 batch_size: int = SCORE_BATCH,
                 max_batch_tokens: int = SCORE_BATCH_TOKENS) -> list[np.ndarray]:
        """Per-token log-probabilities (float64, T = 1) of each continuation given its prompt, by one
        prompt-logprobs pass over prompt + continuation. An empty continuation scores an empty array without a
        request. vLLM schedules its own batches, so the batch limits are ignored."""
        if len(prompts) != len(continuations):
            raise PQError(f"{len(prompts)} prompts for {len(continuations)} continuations")
        todo = [i for i, c in enumerate(continuations) if len(c) > 0]
        result = [np.zeros(0) for _ in continuations]
        if not todo:
            return result
        for i in todo:
            if not prompts[i]:
                raise PQError(
                    f"prompt {i} is empty: vLLM scores a token only after at least one context token"
                )
        params = self.make_params(**scoring_params_kwargs())
        outputs = self._generate(
            [list(prompts[i]) + list(continuations[i]) for i in todo], [params] * len(todo)
        )
        for i, out in zip(todo, outputs, strict=True):
            result[i] = np.array(prompt_tail_logprobs(out, len(prompts[i])), dtype=np.float64)
        return result


# ----------------------------------------------------------------------------------------- loading
class TokenizerFront(HFTokenization):
    """The hf backend's tokenization of a checkpoint without loading its weights: template or chat template,
    BOS, end-of-string ids (tokenizer, config and generation_config), tokenizer key and context length."""

    def __init__(self, name: str, template: str | None, chat_template: bool) -> None:
        from types import SimpleNamespace

        from transformers import AutoConfig, GenerationConfig

        from pqtradeoff.models.hf import check_template, end_of_string_ids, load_tokenizer, tokenizer_key

        check_template(template, chat_template)
        self.name, self.template, self.chat_template = name, template, chat_template
        self.tokenizer = load_tokenizer(name)
        if chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise PQError(f"--chat-template: the tokenizer of {name!r} has no chat template; use --template")
        config = AutoConfig.from_pretrained(name)
        try:
            generation = GenerationConfig.from_pretrained(name)
        except OSError:
            generation = None
        ids = end_of_string_ids(self.tokenizer, SimpleNamespace(config=config, generation_config=generation))
        if not ids:
            raise PQError(f"model {name!r} has no EOS token: strings could never end")
        self.eos_token_id, self.eos_token_ids = ids[0], tuple(ids)
        self.bos_token_id = self.tokenizer.bos_token_id
        self.vocab_size = int(getattr(config.get_text_config(), "vocab_size", len(self.tokenizer)))
        self.tokenizer_key = tokenizer_key(self.tokenizer)
        text = config.get_text_config()
        self.max_length = next(
            (
                v
                for n in ("max_position_embeddings", "n_positions")
                if isinstance(v := getattr(text, n, None), int) and v > 0
            ),
            None,
        )

    def end_ids(self) -> tuple[int, ...]:
        return self.eos_token_ids



def load_vllm(
    spec: Any,
    template: str | None = None,
    chat_template: bool = False,
    *,
    max_model_len: int | None = None,
    seed: int = 0,
    gpu_memory_utilization: float = 0.85,
) -> VLLMModel:
    """A `VLLMModel` for a `ModelSpec` (local folder or hub id of a safetensors checkpoint; no GGUF), with
    batch-invariant kernels and processed logprobs. One engine per process: under Ray, one per GPU actor."""
    vllm = require_vllm()
    if getattr(spec, "gguf_file", None):
        raise PQError(
            f"gguf_file={spec.gguf_file!r}: the vllm backend loads safetensors checkpoints; convert "
            "it first (the hf backend caches a converted folder) or use --backend hf"
        )
    if getattr(spec, "device", "auto") == "cpu":
        raise PQError(
            "device='cpu' with backend='vllm': the vllm backend runs on a GPU; use --backend hf on CPU"
        )
    enable_batch_invariance()
    front = TokenizerFront(spec.name, template, chat_template)
    dtype = getattr(spec, "dtype", "bfloat16")
    engine = vllm.LLM(spec.name, **engine_kwargs(dtype, max_model_len, seed, gpu_memory_utilization))
    return VLLMModel(
        engine, end_ids=front.eos_token_ids, make_params=vllm.SamplingParams, tokenizer_front=front
    )
