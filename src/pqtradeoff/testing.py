"""Builders shared by tests/ and benchmarks/ (the package itself never imports this module).

- `generation_kwargs`: an adaptor as explicit `GenerationConfig` arguments, to run transformers' own
  `generate` as the reference the pipeline's sampling is checked and timed against.
- Tiny Hugging Face checkpoints built offline: a word-level `tokenizers` tokenizer wrapped as a
  `PreTrainedTokenizerFast`, and randomly initialized GPT-2 / Llama causal LMs and a Llama reward model, each
  `save_pretrained` to a folder and loaded back by path - exactly the route a hub checkpoint takes. Two
  tokenizer styles:
  - "llama": <pad>, <s> (BOS, added to every encoding), </s> (EOS), <unk>, and a chat template;
  - "gpt2": one <|endoftext|> that is BOS, EOS and UNK, no pad, nothing added (as GPT-2's tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pqtradeoff.sampling.adaptors import PARAMETERS, Adaptor

WORDS = (
    "the a cat dog sat ran on mat hat big small red blue green is was and or not yes no hello world how "
    "are you I we they it this that what why who when where can will do does good bad happy sad very much "
    "Human Assistant user assistant : ? . , ! please thanks help me tell story about sun moon"
).split()

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def generation_kwargs(adaptor: Adaptor) -> dict[str, Any]:
    """Every sampling parameter of `adaptor` stated explicitly for `GenerationConfig`, off ones by the value
    that disables them.

    `generate` (transformers 5.x) treats None as "unset" and fills it from the model's generation_config and
    then the global defaults (top_k=50!), so an adaptor that is off must be passed as the value that
    `_get_logits_processor` skips: top_k=0, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0;
    min_p has no skipped value, and min_p=0.0 is an exact no-op warper. tests/sampling/test_adaptors checks this
    against a model whose own generation_config sets every one of them. repetition_penalty and
    no_repeat_ngram_size are turned off too; `top_h` has no off value once a model's config sets it, so a
    caller of `generate` should still check the processor list it builds. (The pipeline itself never calls
    `generate`: it samples from `Adaptor.adapt`.)
    """
    ours = [p.name for p in PARAMETERS if ":" in p.warper and getattr(adaptor, p.name) is not None]
    if ours or adaptor.dera is not None:
        raise ValueError(f"{adaptor}: {(ours or ['dera'])[0]} is not a transformers GenerationConfig parameter")
    kwargs: dict[str, Any] = {p.name: p.off if getattr(adaptor, p.name) is None else getattr(adaptor, p.name)
                              for p in PARAMETERS if ":" not in p.warper}
    kwargs["do_sample"] = True
    kwargs["repetition_penalty"] = 1.0  # chat checkpoints ship e.g. 1.05 in their generation_config
    kwargs["no_repeat_ngram_size"] = 0
    return kwargs


def word_tokenizer(style: str = "llama", vocab_size: int | None = None, extra: int = 0):
    """A word-level fast tokenizer; `vocab_size` pads the vocabulary with filler words w0, w1, ..."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # lazy: optional
    from transformers import PreTrainedTokenizerFast  # lazy: transformers

    specials = ["<pad>", "<s>", "</s>", "<unk>"] if style == "llama" else ["<|endoftext|>"]
    words = list(WORDS) + [f"x{i}" for i in range(extra)]
    if vocab_size is not None:
        words += [f"w{i}" for i in range(vocab_size - len(specials) - len(words))]
    vocab = {w: i for i, w in enumerate(specials + words)}
    unk = "<unk>" if style == "llama" else "<|endoftext|>"
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    if style == "llama":
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="<pad>")
        tok.chat_template = CHAT_TEMPLATE
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                      eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    return tok


def build_causal(path: Path, arch: str = "llama", *, tokenizer=None, seed: int = 0, layers: int = 2,
                 hidden: int = 32, heads: int = 4, max_positions: int = 64, init: float = 0.2) -> Path:
    """Save a randomly initialized GPT-2 or Llama causal LM with `tokenizer` (default: word-level) to
    `path`."""
    import torch  # lazy: torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # lazy: transformers

    tok = tokenizer if tokenizer is not None else word_tokenizer("gpt2" if arch == "gpt2" else "llama")
    torch.manual_seed(seed)
    common = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
              "pad_token_id": tok.pad_token_id, "initializer_range": init}
    if arch == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=max_positions, **common)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=max_positions, tie_word_embeddings=False, **common)
        model = LlamaForCausalLM(config)
    # A generation_config that would change sampling if anyone inherited it (we must never).
    model.generation_config.top_k = 3
    model.generation_config.top_p = 0.5
    model.generation_config.temperature = 0.3
    model.generation_config.do_sample = True
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_reward(path: Path, *, seed: int = 0, hidden: int = 32, max_positions: int = 128) -> Path:
    """Save a tiny Llama sequence-classification reward model whose pad token is its EOS token."""
    import torch  # lazy: torch
    from transformers import LlamaConfig, LlamaForSequenceClassification  # lazy: transformers

    tok = word_tokenizer("llama")
    tok.pad_token = tok.eos_token  # pad == eos, as many Llama reward models ship
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), num_hidden_layers=2, hidden_size=hidden,
                         intermediate_size=2 * hidden, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, num_labels=1, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, initializer_range=0.2)
    model = LlamaForSequenceClassification(config)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
