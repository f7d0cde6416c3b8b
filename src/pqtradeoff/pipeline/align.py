"""`align`: make the aligned model p+ of a prior p with DPO (TRL), on preference pairs the prior itself
samples.

The candidates are the project's own corpus: k strings per prompt sampled from the prior (`generate`) and
scored (`score`: `logp_prior` and the reward). Each prompt gives one pair, its best string against its
worst; a prompt whose candidates all have the same reward gives none (counted). TRL's `DPOTrainer` then fits
p+ with the given beta on those pairs, as token ids: the prompt and continuation ids exactly as sampled,
never decoded and re-tokenized. With `lora_rank > 0` a peft LoRA adapter on every linear layer is trained
and merged into the weights at the end; 0 is a full fine-tune.

The result is a Hugging Face model folder (`AutoModelForCausalLM.from_pretrained(DIR)`), with the prior's
tokenizer and chat template, and beside the weights its record: `pairs.parquet`, `train_log.json` (TRL's
log: loss, reward accuracy and margins per step), `candidates/` (the scored candidate corpus) and
`_run.json`. It is assembled in a hidden sibling folder and renamed into place, so a killed run leaves the
previous folder or nothing, never half a model; rerunning the same command picks the staged candidates up
and completes it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError
from pqtradeoff.io import atomic_write, write_json

log = logging.getLogger("pqtradeoff")

#: The extra that brings TRL and peft.
ALIGN_EXTRA = 'pip install -e ".[align]"'
#: The files of an aligned model's record (beside the weights and the tokenizer).
PAIRS, TRAIN_LOG, CANDIDATES, INPUTS = "pairs.parquet", "train_log.json", "candidates", "_align_inputs.json"


def require_align_packages() -> None:
    """One line naming the extra when TRL or peft is missing (before any model is loaded)."""
    for module, package in (("trl", "TRL"), ("peft", "peft")):
        if importlib.util.find_spec(module) is None:
            raise PQError(f"{package} is not installed, and `align` needs it: {ALIGN_EXTRA}")


# -------------------------------------------------------------------------------------------------- pairs
def preference_pairs(scored: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One pair per prompt, its highest-reward candidate (chosen) against its lowest (rejected); ties broken
    by the lower sample id. Returns the pairs and how many prompts gave none (all rewards equal).

    Raises PQError when a reward is not a finite number (the reward cannot be computed on the candidates)."""
    rewards = scored[Col.REWARD].to_numpy(np.float64)
    bad = ~np.isfinite(rewards)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        first = f"prompt {int(scored[Col.PROMPT_ID].iloc[i])}, value {float(rewards[i])!r}"
        raise PQError(f"the reward is not a finite number on {int(bad.sum())} of {len(rewards)} candidates "
                      f"(first: {first}): it cannot rank them")
    rows, ties = [], 0
    ordered = scored.sort_values([Col.PROMPT_ID, Col.SAMPLE_ID], kind="stable")
    for prompt_id, group in ordered.groupby(Col.PROMPT_ID, sort=True):
        r = group[Col.REWARD].to_numpy(np.float64)
        best, worst = int(np.argmax(r)), int(np.argmin(r))
        if r[best] == r[worst]:
            ties += 1
            continue
        chosen, rejected = group.iloc[best], group.iloc[worst]
        rows.append({
            Col.PROMPT_ID: int(prompt_id), Col.PROMPT: chosen[Col.PROMPT],
            "prompt_ids": [int(t) for t in chosen[Col.PROMPT_TOKEN_IDS]],
            "chosen_ids": [int(t) for t in chosen[Col.TOKEN_IDS]],
            "rejected_ids": [int(t) for t in rejected[Col.TOKEN_IDS]],
            "chosen": chosen[Col.TEXT], "rejected": rejected[Col.TEXT],
            "chosen_sample_id": int(chosen[Col.SAMPLE_ID]),
            "rejected_sample_id": int(rejected[Col.SAMPLE_ID]),
            "chosen_reward": float(r[best]), "rejected_reward": float(r[worst]),
            "chosen_finished": bool(chosen[Col.FINISHED]), "rejected_finished": bool(rejected[Col.FINISHED]),
        })
    return pd.DataFrame(rows), ties


# ---------------------------------------------------------------------------------------------- training
def train_dpo(model: Any, tokenizer: Any, pairs: pd.DataFrame, work_dir: Path, *, beta: float, seed: int,
              epochs: int, learning_rate: float, lora_rank: int, batch_size: int, progress: bool,
              ) -> tuple[Any, list[dict[str, Any]]]:
    """Fit `model` (a causal LM, trained in place) with TRL's DPO on the token-id pairs; returns the trained
    model (LoRA merged in) and TRL's log history. The reference model is the model as given."""
    from datasets import Dataset  # lazy: TRL's dependency
    from trl import DPOConfig, DPOTrainer

    class TokenIdsDPOTrainer(DPOTrainer):
        """TRL's trainer on pairs given as token ids: no re-tokenization of the sampled strings."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    on_cpu = str(next(model.parameters()).device) == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renaming of gradient_checkpointing
        return _train(DPOConfig, TokenIdsDPOTrainer, Dataset, model, tokenizer, pairs, work_dir, beta=beta,
                      seed=seed, epochs=epochs, learning_rate=learning_rate, lora_rank=lora_rank,
                      batch_size=batch_size, progress=progress, on_cpu=on_cpu)


def _train(DPOConfig: Any, Trainer: Any, Dataset: Any, model: Any, tokenizer: Any, pairs: pd.DataFrame,  # noqa: N803
           work_dir: Path, *, beta: float, seed: int, epochs: int, learning_rate: float, lora_rank: int,
           batch_size: int, progress: bool, on_cpu: bool) -> tuple[Any, list[dict[str, Any]]]:
    args = DPOConfig(
        output_dir=str(work_dir), beta=beta, seed=seed, data_seed=seed, num_train_epochs=epochs,
        learning_rate=learning_rate, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        max_length=None, logging_steps=1, save_strategy="no", report_to=[], use_cpu=on_cpu,
        disable_tqdm=not progress, gradient_checkpointing=False, bf16=False, fp16=False,
        dataloader_num_workers=0, remove_unused_columns=False,
    )
    peft_config = None
    if lora_rank > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = Dataset.from_dict({name: list(pairs[name]) for name in ("prompt_ids", "chosen_ids",
                                                                      "rejected_ids")})
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        """The progress bar without the per-step dicts it writes under it (train_log.json keeps them)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(BarOnly)
    trainer.train()
    trained = trainer.model
    if lora_rank > 0:
        trained = trained.merge_and_unload()
    trained.config.use_cache = True
    return trained.eval(), list(trainer.state.log_history)


def summarize_log(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The first and last logged step's loss, reward accuracy and margin (TRL's names), and the step count."""
    steps = [h for h in history if "loss" in h]
    keys = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
    pick = (lambda h: {k: h[k] for k in keys if k in h}) if steps else None
    return {"steps": len(steps), "first": pick(steps[0]) if steps else None,
            "last": pick(steps[-1]) if steps else None,
            "train": next((h for h in reversed(history) if "train_loss" in h), None)}


# ------------------------------------------------------------------------------------------- the folder
def staging_folder(out: Path) -> Path:
    """The hidden sibling where the aligned model's folder is assembled before it is renamed into place."""
    return out.parent / f".{out.name}.partial"


def recorded_inputs(folder: Path) -> dict[str, Any] | None:
    """The inputs an aligned-model folder (or its staging folder) was made from; None if it has none."""
    path = folder / INPUTS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def prepare_staging(out: Path, inputs: dict[str, Any]) -> Path:
    """The staging folder for these inputs: kept when a killed run left it for the same inputs (its
    candidates are resumed), emptied otherwise."""
    staging = staging_folder(out)
    if staging.exists() and recorded_inputs(staging) != inputs:
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    write_json(staging / INPUTS, inputs)
    return staging


def write_model(staging: Path, model: Any, tokenizer: Any, pairs: pd.DataFrame, history: list[dict[str, Any]],
                record: dict[str, Any]) -> None:
    """The weights, the prior's tokenizer (chat template included), the pairs, the log and `_run.json`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    table = pa.Table.from_pandas(pairs, preserve_index=False)
    atomic_write(staging / PAIRS, lambda tmp: pq.write_table(table, tmp))
    write_json(staging / TRAIN_LOG, history)
    write_json(staging / "_run.json", record)


def publish(staging: Path, out: Path, aside: Path | None = None) -> None:
    """Rename the finished staging folder to `out`; an existing `out` is first moved to `aside` (or removed
    when `aside` is None)."""
    if out.exists():
        if aside is None:
            shutil.rmtree(out)
        else:
            aside.parent.mkdir(parents=True, exist_ok=True)
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(out, aside)
    os.replace(staging, out)
