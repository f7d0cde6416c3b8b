"""The settings models are the one source of every option: each field is reachable from its CLI command and
from an experiment file, and their checks give one-line errors that name the key."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from pqtradeoff.analysis.settings import AnalysisSettings
from pqtradeoff.errors import PQError, validated
from pqtradeoff.experiment.settings import ExperimentSettings, GenerateSettings, ScoreSettings
from pqtradeoff.pipeline.resume import resume_policy


def leaf_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, info in model.model_fields.items():
        keyed = typing.get_origin(info.annotation) is dict  # a table of named sections: one leaf
        nested = [] if keyed else [c for c in [info.annotation, *typing.get_args(info.annotation)]
                                   if isinstance(c, type) and issubclass(c, BaseModel)]
        out |= leaf_paths(nested[0], f"{prefix}{name}.") if nested else {f"{prefix}{name}"}
    return out


@pytest.mark.parametrize("module, model", [("generate", GenerateSettings), ("score", ScoreSettings),
                                           ("analyze", AnalysisSettings)])
def test_every_settings_field_is_a_cli_option(module, model):
    import importlib

    cli = importlib.import_module(f"pqtradeoff.cli.{module}")
    flags = cli.FLAGS | getattr(cli, "OTHER_OPTIONS", {})
    reached = {p for paths in flags.values() for p in ((paths,) if isinstance(paths, str) else paths)}
    assert leaf_paths(model) - reached == set(), "fields without a CLI option"
    assert reached - leaf_paths(model) == set(), "options that set no field"


def test_every_experiment_key_is_in_the_resolved_config_and_reads_back(tmp_path):
    from pqtradeoff.experiment.config import example_config, load_experiment, resolved_config

    path = tmp_path / "a.toml"
    path.write_text(example_config("smollm2-gemma-vader"), encoding="utf-8")
    settings = load_experiment(path)
    text = resolved_config(settings)
    values = settings.model_dump()

    def unset_section(key: str) -> bool:  # a key inside an optional section left out (printed as unset)
        node = values
        for part in key.split(".")[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                return True
        return False

    for key in leaf_paths(ExperimentSettings):
        if not unset_section(key):
            assert key.rsplit(".", 1)[-1] in text, key
    again = tmp_path / "b.toml"
    again.write_text(text, encoding="utf-8")
    assert load_experiment(again) == settings


def test_every_leaf_has_a_resume_policy_and_batching_never_blocks():
    policy = resume_policy(GenerateSettings)
    assert set(policy) == leaf_paths(GenerateSettings)
    assert policy["compute.batch_size"] == "free" and policy["sampling.adaptors"] == "grow"
    assert policy["sampling.seed"] == policy["model.name"] == policy["prompts.template"] == "fixed"


@pytest.mark.parametrize("values, message", [
    ({"reward": {"kind": "dpo"}}, "needs beta"),
    ({"reward": {"kind": "vader", "beta": 0.1}}, "only applies to kind='dpo'"),
    ({"reward": {"kind": "dpo", "beta": 0.1, "prior_context": "none"}}, "prior_context='prompt'"),
    ({"reward": {"kind": "nope"}}, "kind='nope' is not one of"),
    ({"reward": {"kind": "vader"}, "reward_model": {"name": "x"}}, "give exactly one"),
    ({}, "no reward"),
    ({"reward": {"kind": "vader"}, "prior": {"name": "m", "dtype": "float8"}}, "prior.dtype='float8'"),
])
def test_score_settings_are_checked_in_one_place(values, message):
    with pytest.raises(PQError, match=message) as err:
        validated(ScoreSettings, **values)
    assert "\n" not in str(err.value) and "Value error" not in str(err.value)


@pytest.mark.parametrize("sampling, message", [
    ({"adaptors": ["top_k=5", "top_k=5,temperature=1"]}, "names 'temperature=1.0,top_k=5' more than once"),
    ({"families": ["ancestral"], "temperatures": [1.0], "adaptors": ["ancestral"]}, "more than once"),
    ({"families": ["ancestral"]}, "go together"),
    ({}, "grid is empty"),
    ({"adaptors": ["top_k=0"]}, "top_k=0"),
])
def test_the_grid_is_checked(sampling, message):
    with pytest.raises(PQError, match=message):
        validated(GenerateSettings, model={"name": "m"}, prompts={"file": "p.jsonl"},
                  sampling={"num_generations": 1, "max_new_tokens": 4, "seed": 0} | sampling)


@pytest.mark.parametrize("field, value", [("num_generations", 10**9), ("seed", 2**64), ("max_new_tokens", 0)])
def test_huge_or_negative_values_are_refused_before_any_work(field, value):
    sampling = {"num_generations": 1, "max_new_tokens": 4, "seed": 0,
                "adaptors": ["ancestral"]} | {field: value}
    with pytest.raises(PQError, match=f"sampling.{field}="):
        validated(GenerateSettings, model={"name": "m"}, prompts={"file": "p.jsonl"}, sampling=sampling)


def test_template_without_prompt_slot():
    with pytest.raises(PQError, match="has no {prompt} slot"):
        validated(GenerateSettings, model={"name": "m"},
                  prompts={"file": "p", "template": "Human: Assistant:"},
                  sampling={"num_generations": 1, "max_new_tokens": 4, "seed": 0, "adaptors": ["ancestral"]})


def test_fixed_changes_see_a_section_that_was_none_and_ignore_settings_a_side_never_knew():
    from pqtradeoff.pipeline.resume import fixed_changes

    old = {"prior": None, "reward": {"kind": "vader"}}
    new = {"prior": {"name": "m", "dtype": "float32"}, "reward": {"kind": "vader"}, "added_later": 1}
    assert fixed_changes(old, new, {}) == [("prior.dtype", None, "float32"), ("prior.name", None, "m")]
    assert fixed_changes(new, new | {"compute": {"batch_size": 4}}, {"compute": "free"}) == []


def test_best_of_n_reward_names_a_further_reward(tmp_path):
    """best_of_n_reward picks the reward that ranks best-of-N candidates; a missing table is one line."""
    from pqtradeoff.experiment.config import example_config, load_experiment

    text = example_config("smollm2-dpo-vader")
    path = tmp_path / "a.toml"
    path.write_text(text, encoding="utf-8")
    settings = load_experiment(path)
    made = settings.generate_settings(aligned=settings.models.prior)
    assert made.reward is not None and made.reward.kind == "vader"  # not the primary (dpo)
    assert made.prior == settings.models.prior  # the grid has DeRa
    path.write_text(text.replace('best_of_n_reward = "vader"', 'best_of_n_reward = "sentiment"'),
                    encoding="utf-8")
    with pytest.raises(PQError, match=r"best_of_n_reward='sentiment' names no \[rewards.NAME\] table \(have: "
                                      r"vader\)") as err:
        load_experiment(path)
    assert "\n" not in str(err.value)
