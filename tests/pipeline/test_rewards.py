"""Rewards: the registry of built-in rewards, what each declares it needs, and user reward functions called
as TRL calls them (keyword arguments), as before (positionally), failing, or returning the wrong length."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.errors import PQError
from pqtradeoff.experiment.settings import RewardSettings
from pqtradeoff.pipeline.rewards import (
    REWARD_REGISTRY,
    DPOReward,
    FunctionReward,
    VaderReward,
    is_reward_kind,
    make_reward,
    reward_kinds,
)
from pqtradeoff.pipeline.score import check_reward_needs


def _batch() -> pd.DataFrame:
    """Corpus rows as the score stage hands them to a reward (token ids as arrays, as read from Parquet)."""
    return pd.DataFrame({
        "prompt": ["Tell me", "Hi", "Say"],
        "text": [" a story", " there you", ""],
        "token_ids": [np.array([5, 6]), np.array([7, 8, 9]), np.array([], dtype=np.int64)],
        "config": ["ancestral", "top_k=3", "ancestral"],
        "logp_aligned": [-1.0, -2.5, -0.5],
        "logp_prior": [-1.5, -2.0, -0.5],
        "answer": ["a story", "x", ""],
    })


# ------------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("kind", sorted(REWARD_REGISTRY))
def test_registry_builds_each_kind_and_settings_accept_it(kind):
    cls = REWARD_REGISTRY[kind]
    params = {name: 0.5 for name in cls.parameters}
    reward = make_reward(kind, **params)
    assert type(reward) is cls
    assert is_reward_kind(kind) and kind in reward_kinds()
    assert RewardSettings(kind=kind, **params).kind == kind


def test_registry_kinds_are_what_the_settings_accept():
    assert reward_kinds() == ("model", "dpo", "vader", "python:MODULE:FUNCTION")
    assert RewardSettings(kind="model").kind == "model"
    assert RewardSettings(kind="python:m:f").kind == "python:m:f"
    for bad in ("banana", "DPO", "python"):
        assert not is_reward_kind(bad)
        with pytest.raises(ValueError, match=f"kind='{bad}' is not one of model, dpo, vader"):
            RewardSettings(kind=bad)


@pytest.mark.parametrize("kind, kw, message", [
    ("dpo", {}, "needs --beta"), ("dpo", {"beta": 0.0}, "beta=0.0"), ("vader", {"beta": 1.0}, "only applies"),
    ("banana", {}, "'banana' is not one of"), (None, {}, "exactly one"),
    ("python:m:f", {"beta": 1.0}, "only applies to --reward dpo"),
])
def test_make_reward_errors(kind, kw, message):
    with pytest.raises(PQError, match=message):
        make_reward(kind, **kw)


# --------------------------------------------------------------------------------------------------- needs
def test_each_reward_declares_what_it_reads():
    batch = _batch()
    dpo = DPOReward(2.0)
    assert dpo.needs_prompt_context and set(dpo.columns) == {"logp_aligned", "logp_prior"}
    np.testing.assert_allclose(dpo(batch[list(dpo.columns)]), 2.0 * np.array([0.5, -0.5, 0.0]))
    vader = VaderReward()
    assert not vader.needs_prompt_context
    np.testing.assert_array_equal(vader(batch[list(vader.columns)]), vader(batch))
    fn = FunctionReward(lambda prompts,
                        completions: [len(p + c) for p, c in zip(prompts, completions, strict=True)],
                        "f")
    assert not fn.needs_prompt_context
    assert fn(batch[list(fn.columns)]).tolist() == [15.0, 12.0, 3.0]


class _ReadsPriorGivenPrompt:
    """Not a DPOReward: the score stage must go by what a reward declares, not by its class."""

    name = "mine"
    needs_prompt_context = True
    columns = ("logp_prior",)

    def __call__(self, batch: pd.DataFrame) -> np.ndarray:
        return batch["logp_prior"].to_numpy(np.float64)


def test_a_reward_that_needs_the_prompt_context_is_refused_without_it():
    check_reward_needs(_ReadsPriorGivenPrompt(), "prompt")
    with pytest.raises(PQError, match="reward 'mine' needs --prior-context prompt"):
        check_reward_needs(_ReadsPriorGivenPrompt(), "none")
    check_reward_needs(VaderReward(), "none")


# ----------------------------------------------------------------------------------------- user functions
def test_trl_style_function_gets_keyword_arguments_and_every_column():
    seen = {}

    def trl_reward(completions, **kwargs):  # the shape of a TRL reward function
        seen.update(kwargs, completions=completions)
        return [float(len(c)) for c in completions]

    batch = _batch()
    assert FunctionReward(trl_reward, "python:t:trl")(batch).tolist() == [8.0, 10.0, 0.0]
    assert seen["completions"] == list(batch["text"]) and seen["prompts"] == list(batch["prompt"])
    assert seen["completion_ids"] == [[5, 6], [7, 8, 9], []]
    assert seen["config"] == list(batch["config"]) and seen["logp_prior"] == [-1.5, -2.0, -0.5]
    assert "text" not in seen and "prompt" not in seen and "token_ids" not in seen


def test_trl_function_naming_a_column_without_kwargs_gets_only_what_it_names():
    def exact_match(completions, answer):
        return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer, strict=True)]

    def ids_and_prompts(prompts, completion_ids):
        return [len(p) + len(ids) for p, ids in zip(prompts, completion_ids, strict=True)]

    assert FunctionReward(exact_match, "em")(_batch()).tolist() == [1.0, 0.0, 1.0]
    assert FunctionReward(ids_and_prompts, "ids")(_batch()).tolist() == [9.0, 5.0, 3.0]


def test_old_positional_function_still_works(monkeypatch):
    mod = types.ModuleType("my_rewards")
    mod.length = lambda prompts, completions: [len(c) for c in completions]
    mod.short_names = lambda p, c: [len(x) + 10 * len(y) for x, y in zip(p, c, strict=True)]
    monkeypatch.setitem(sys.modules, "my_rewards", mod)
    batch = pd.DataFrame({"prompt": ["a", "b"], "text": ["xyz", ""]})
    assert make_reward("python:my_rewards:length")(batch).tolist() == [3.0, 0.0]
    assert make_reward("python:my_rewards:short_names")(batch).tolist() == [31.0, 1.0]
    with pytest.raises(PQError, match="no function 'nope'"):
        make_reward("python:my_rewards:nope")
    with pytest.raises(PQError, match="cannot import module"):
        make_reward("python:no_such_module_xyz:f")
    with pytest.raises(PQError, match="not of the form"):
        make_reward("python:only_module")


def test_none_becomes_nan_as_in_trl():
    out = FunctionReward(lambda completions, **kw: [None, 1.0, 2.0], "n")(_batch())
    assert np.isnan(out[0]) and out[1:].tolist() == [1.0, 2.0]


def test_raising_function_is_one_line_naming_the_reward():
    def broken(completions, **kwargs):
        raise ValueError("no such\nthing")

    expected = r"^reward 'python:m:broken' raised ValueError on row 0 of the batch: no such$"
    with pytest.raises(PQError, match=expected) as info:
        FunctionReward(broken, "python:m:broken")(_batch())
    assert "\n" not in str(info.value)


def test_function_taking_an_argument_no_column_has():
    with pytest.raises(PQError, match="takes argument\\(s\\) gold, extra that are not corpus columns"):
        FunctionReward(lambda completions, gold, extra: [0.0], "g")(_batch())


@pytest.mark.parametrize("values, message", [
    ([1.0], "returned 1 values for 3 completions"), (2.0, "returned a scalar"),
    (["a", "b", "c"], "not numbers"), ([[1.0, 2.0]] * 3, "returned 3 values"),
])
def test_wrong_length_or_type_is_refused(values, message):
    with pytest.raises(PQError, match=message):
        FunctionReward(lambda completions, **kw: values, "w")(_batch())


def test_vader_reward_orders_sentiment():
    values = VaderReward()(pd.DataFrame({"text": ["I love this, wonderful!", "the table",
                                                  "awful, I hate it"]}))
    assert values[0] > values[1] > values[2]
