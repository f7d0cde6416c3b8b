"""The demo's exact models: its word list, priors and rewards (built on the finite-state backend).

- `demo_models`: the default demo, a random bigram prior over `DEMO_WORDS` with one rare, highly valued word
  and a word-valence lexicon, whose string-level correlation of log p(y) and r(y) is positive while the
  corpus-level trade-off is negative.
- `rarity_reward`: the alternative reward (`pqtradeoff demo --reward rarity`), paying for every word's rarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pqtradeoff.errors import PQError
from pqtradeoff.models.fsa import Alignment, FiniteStateLM, TransitionReward, align, random_ngram

#: The demo's words; the last one is the rare, highly valued word.
DEMO_WORDS = ("the", "a", "day", "cat", "dog", "ran", "sat", "and", "fine", "nice", "odd", "superb")


@dataclass(frozen=True, eq=False)
class DemoModels:
    prior: FiniteStateLM
    reward: TransitionReward
    alignment: Alignment

    @property
    def aligned(self) -> FiniteStateLM:
        return self.alignment.aligned


def with_rare_word(model: FiniteStateLM, word: int, prob: float) -> FiniteStateLM:
    """The same automaton with p(word | s) = prob in every state that can emit words; the other words of
    the state share the rest of its word mass in their old proportions (EOS unchanged)."""
    if not isinstance(prob, (int, float)) or not 0.0 < prob < 1.0:
        raise PQError(f"rare word prob={prob!r} is out of range: need 0 < prob < 1")
    probs = model.probs
    words = np.arange(model.vocab_size) != model.eos_token_id
    mass = probs[:, words].sum(axis=1, keepdims=True)
    others = np.where(words & (np.arange(model.vocab_size) != word), probs, 0.0)
    scale = np.divide(np.maximum(mass - prob, 0.0), others.sum(axis=1, keepdims=True),
                      out=np.zeros_like(mass), where=others.sum(axis=1, keepdims=True) > 0)
    new = np.where(words, others * scale, probs)
    new[:, word] = np.where(mass[:, 0] > prob, prob, probs[:, word])
    with np.errstate(divide="ignore"):
        return model.with_log_probs(np.log(new))


def demo_models(
    seed: int = 0, *, beta: float = 1.0, order: int = 2,
    rare_prob: float = 0.0025, rare_value: float = 3.3, word_value: float = -0.2,
) -> DemoModels:
    """The default demo: a random bigram prior over `DEMO_WORDS` and a word-valence lexicon.

    The lexicon charges every ordinary word `word_value` (< 0) and values the rare last word ("superb",
    probability `rare_prob` everywhere) at `rare_value`. Short plain strings are both likely and rewarded,
    so over the strings an adaptor grid generates, log p(y) and r(y) have a positive rank correlation
    (about +0.2 for the defaults; about 0 under p+ alone); the rare word makes a few strings unlikely but
    highly rewarded, so across adaptors the exact means trade prior likelihood for reward (correlation
    about -0.75 over the paper's grid): cold adaptors avoid the rare word, hot ones find it. Every
    configuration of that grid whose global adaptor normalizes is well conditioned (spectral radius < 0.8,
    IMH efficiency > 0.2); the hottest ones do not normalize. Tuned for seed 0 (see
    tests/exact/test_demo_models.py).

    Why not simply a reward that favours likely words: with p+ proportional to p exp(r/beta) exactly, the
    globally normalized temperature family moves as d E[f] / d(1/T) = Cov(f, log p+), so a reward whose
    covariance with log p is positive everywhere makes colder corpora gain both likelihood and reward.
    """
    base = random_ngram(len(DEMO_WORDS), order, seed=seed, alpha=0.5, eos_prob=0.2, zipf=1.0,
                        words=DEMO_WORDS)
    rare = len(DEMO_WORDS) - 1
    prior = with_rare_word(base, rare, rare_prob)
    lexicon = {w: float(word_value) for w in DEMO_WORDS[:-1]} | {DEMO_WORDS[-1]: float(rare_value)}
    reward = TransitionReward.from_lexicon(prior, lexicon, name="demo-lexicon")
    return DemoModels(prior, reward, align(prior, reward, beta))


def rarity_reward(
    prior: FiniteStateLM, rarity: float, word_cost: float, noise: float = 0.1, seed: int = 0
) -> TransitionReward:
    """A transition reward that pays for rare words and charges for length:
    phi(s, v) = rarity * (max_w log p(w|s) - log p(v|s)) - word_cost + noise, and 0 for EOS.

    Rare words earn reward the prior does not like, so raising likelihood (lower temperature, truncation)
    costs reward: the paper's trade-off, in closed form.
    """
    rng = np.random.default_rng(seed)
    lp = np.where(np.isfinite(prior.log_probs), prior.log_probs, np.nan)
    words = np.arange(prior.vocab_size) != prior.eos_token_id
    top = np.nanmax(np.where(words, lp, np.nan), axis=1, keepdims=True)
    phi = rarity * (top - lp) - word_cost + noise * rng.standard_normal(lp.shape)
    phi = np.where(np.isnan(phi), 0.0, phi)
    phi[:, prior.eos_token_id] = 0.0
    return TransitionReward(prior, phi, name=f"rarity(rarity={rarity:g},word_cost={word_cost:g})")
