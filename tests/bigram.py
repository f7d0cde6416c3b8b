"""A tiny bigram language model behind the pipeline's model interface, for testing generate and score."""

from __future__ import annotations

import torch

from pqtradeoff.models.decoding import StepLanguageModel


class BigramModel(StepLanguageModel):
    """Next-token logits depend on the last token only; token 0 is EOS, token `bos` starts an empty prompt."""

    def __init__(self, vocab_size: int = 6, seed: int = 0, eos_bias: float = 0.0,
                 key: str = "bigram") -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab_size, vocab_size, generator=g, dtype=torch.float32) * 2.0
        self.table[:, 0] += eos_bias
        self.vocab_size = vocab_size
        self.eos_token_id = 0
        self.bos = vocab_size - 1
        self.tokenizer_key = key
        self.max_length = None
        self.words = [f"w{i}" for i in range(vocab_size)]

    def encode_prompt(self, prompt: str) -> list[int]:
        return [self.bos] + self.encode_continuation(prompt)

    def empty_context(self) -> list[int]:
        return [self.bos]

    def encode_continuation(self, text: str) -> list[int]:
        return [self.words.index(w) for w in text.split()]

    def decode(self, token_ids: list[int]) -> str:
        return " ".join(self.words[t] for t in token_ids if t != self.eos_token_id)

    def start(self, prompts):
        last = torch.tensor([p[-1] if p else self.bos for p in prompts])
        return self.table[last].clone(), last

    def step(self, state, tokens):
        return self.table[tokens].clone(), tokens

    def keep(self, state, rows):
        return state[rows]

    can_join = True

    def join(self, state, other):
        return torch.cat([state, other])

    def continuation_logits(self, prompts, continuations):
        width = max(len(c) for c in continuations)
        out = torch.zeros(len(prompts), width, self.vocab_size)
        for b, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
            context = [p[-1] if p else self.bos] + list(c[:-1])
            for t in range(len(c)):
                out[b, t] = self.table[context[t]]
        return out
