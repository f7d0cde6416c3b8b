"""Tiny Hugging Face checkpoints built offline for the tests and the benchmark.

A word-level `tokenizers` tokenizer wrapped as a `PreTrainedTokenizerFast`, and randomly initialized GPT-2 /
Llama causal LMs and a Llama reward model, each `save_pretrained` to a folder and loaded back by path -
exactly the route a hub checkpoint takes. Two tokenizer styles:
- "llama": <pad>, <s> (BOS, added to every encoding), </s> (EOS), <unk>, and a chat template;
- "gpt2": one <|endoftext|> that is BOS, EOS and UNK, no pad, nothing added (as GPT-2's tokenizer).
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a cat dog sat ran on mat hat big small red blue green is was and or not yes no hello world how "
    "are you I we they it this that what why who when where can will do does good bad happy sad very much "
    "Human Assistant user assistant : ? . , ! please thanks help me tell story about sun moon"
).split()

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def word_tokenizer(style: str = "llama", vocab_size: int | None = None, extra: int = 0):
    """A word-level fast tokenizer; `vocab_size` pads the vocabulary with filler words w0, w1, ..."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

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
    """Save a randomly initialized GPT-2 or Llama causal LM with `tokenizer` (default: word-level) to `path`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

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
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

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
