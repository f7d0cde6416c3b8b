"""`align` on the tiny offline models: pairs, the model folder, training in the reward's direction, kill -9
and resume, the bad inputs; `run` with [align] and the implicit-DPO identity on its scored corpus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pqtradeoff.columns import Col
from pqtradeoff.errors import PQError
from pqtradeoff.pipeline.align import PAIRS, TRAIN_LOG, preference_pairs, staging_folder

from cli_helpers import cli, write_prompts

pytest.importorskip("trl")
pytest.importorskip("peft")

#: A reward the tiny model can learn: how many continuation tokens have an even id.
EVEN_REWARD = """
def reward(prompts, completions, completion_ids, **kw):
    return [float(sum(1 for t in ids if t % 2 == 0)) for ids in completion_ids]
"""
WORDS = "the a cat dog sat ran on mat hat big small red blue green is was and or not yes no".split()


@pytest.fixture()
def setup(tiny_hf, tmp_path, monkeypatch):
    (tmp_path / "even_reward.py").write_text(EVEN_REWARD)
    (tmp_path / "flat_reward.py").write_text("def reward(prompts, completions, **kw):\n"
                                             "    return [1.0 for _ in completions]\n")
    (tmp_path / "nan_reward.py").write_text("def reward(prompts, completions, **kw):\n"
                                            "    return [float('nan') for _ in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    prompts = write_prompts(tmp_path / "p.jsonl", [" ".join(WORDS[i:i + 3]) for i in range(8)])
    return tiny_hf, prompts, tmp_path


def align_args(prior, prompts, out, *extra) -> list:
    return ["align", "--prior", prior, "--prompts", prompts, "--reward", "python:even_reward:reward",
            "--beta", 0.1, "--seed", 0, "--device", "cpu", "--max-new-tokens", 6, "--candidates", 6,
            "--epochs", 5, "--learning-rate", 1e-3, "--train-batch-size", 2, "--no-progress", "--out", out,
            *extra]


def test_pairs_are_best_against_worst_and_ties_are_dropped():
    frame = pd.DataFrame({
        Col.PROMPT_ID: [0, 0, 0, 1, 1, 2, 2, 2], Col.SAMPLE_ID: [0, 1, 2, 0, 1, 0, 1, 2],
        Col.PROMPT: ["a"] * 3 + ["b"] * 2 + ["c"] * 3, Col.REWARD: [0.5, 2.0, -1.0, 3.0, 3.0, 1.0, 4.0, 4.0],
        Col.PROMPT_TOKEN_IDS: [[1]] * 8, Col.TOKEN_IDS: [[10 + i] for i in range(8)],
        Col.TEXT: [f"t{i}" for i in range(8)], Col.FINISHED: [True] * 8,
    })
    pairs, ties = preference_pairs(frame.sample(frac=1.0, random_state=0))  # row order does not matter
    assert ties == 1 and pairs[Col.PROMPT_ID].tolist() == [0, 2]
    assert pairs["chosen_ids"].tolist() == [[11], [16]] and pairs["rejected_ids"].tolist() == [[12], [15]]
    assert pairs["chosen_reward"].tolist() == [2.0, 4.0] and pairs["rejected_reward"].tolist() == [-1.0, 1.0]
    frame.loc[4, Col.REWARD] = np.nan
    with pytest.raises(PQError, match="not a finite number on 1 of 8"):
        preference_pairs(frame)


def _mass_on_even_ids(path: Path, prompts: list[list[int]]) -> float:
    """transformers directly: the next-token probability of even ids after each prompt, averaged."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return float(np.mean([torch.softmax(model(torch.tensor([p])).logits[0, -1].double(), -1)[0::2].sum()
                              for p in prompts]))


def test_align_makes_a_loadable_model_moved_in_the_reward_direction(setup, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny, prompts, tmp = setup
    code, out, err = cli(monkeypatch, capsys, *align_args(tiny.llama, prompts, tmp / "al"))
    assert code == 0, err
    assert "8 preference pairs from 8 prompts" in out
    folder = tmp / "al"
    pairs = pd.read_parquet(folder / PAIRS)
    assert len(pairs) == 8 and (pairs["chosen_reward"] > pairs["rejected_reward"]).all()
    scored = pd.read_parquet(folder / "candidates_scored")
    assert len(scored) == 8 * 6  # k candidates per prompt, sampled by generate and scored by score
    for _, pair in pairs.iterrows():  # the pair's ids are the sampled candidates' own ids
        rows = scored[scored[Col.PROMPT_ID] == pair[Col.PROMPT_ID]]
        assert list(pair["chosen_ids"]) == list(rows[Col.TOKEN_IDS].iloc[int(np.argmax(rows[Col.REWARD]))])
    record = json.loads((folder / "_run.json").read_text())
    assert record["command"] == "align" and record["settings"]["training"]["beta"] == 0.1
    assert record["result"]["training"]["steps"] == 20 and "versions" in record
    log = json.loads((folder / "train_log.json").read_text())
    assert any("rewards/margins" in h for h in log)
    # loads with transformers, the prior's tokenizer and chat template
    AutoModelForCausalLM.from_pretrained(folder)
    mine, prior = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(tiny.llama)
    assert mine.get_vocab() == prior.get_vocab() and mine.chat_template == prior.chat_template
    # in the reward's direction: more mass on even ids, larger log-likelihood margin chosen vs rejected
    prompt_ids = [list(p) for p in pairs["prompt_ids"]]
    assert _mass_on_even_ids(folder, prompt_ids) > _mass_on_even_ids(tiny.llama, prompt_ids) + 0.02
    # the same command again: reused, no training
    code, out, _ = cli(monkeypatch, capsys, *align_args(tiny.llama, prompts, tmp / "al"))
    assert code == 0 and "reused (same inputs)" in out
    code, _, err = cli(monkeypatch, capsys, *align_args(tiny.llama, prompts, tmp / "al", "--lora-rank", 4))
    assert code == 2 and "made from other inputs (settings.training.lora_rank differ)" in err


def test_lora_is_merged_into_the_weights(setup, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    tiny, prompts, tmp = setup
    code, _, err = cli(monkeypatch, capsys, *align_args(tiny.llama, prompts, tmp / "lora", "--lora-rank", 4))
    assert code == 0, err
    names = {n for n, _ in AutoModelForCausalLM.from_pretrained(tmp / "lora").named_parameters()}
    plain = {n for n, _ in AutoModelForCausalLM.from_pretrained(tiny.llama).named_parameters()}
    assert names == plain  # no adapter left: merged


def test_kill_9_during_training_leaves_no_model_and_the_rerun_completes(setup, monkeypatch, capsys):
    tiny, prompts, tmp = setup
    out = tmp / "killed"
    args = align_args(tiny.llama, prompts, out, "--epochs", 400)
    argv = [sys.executable, "-m", "pqtradeoff", *map(str, args)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    trainer = staging_folder(out) / "_trainer"
    deadline = time.time() + 120
    while not trainer.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # training under way
    assert proc.poll() is None, "align finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written where the model goes
    code, _, err = cli(monkeypatch, capsys, *align_args(tiny.llama, prompts, out))
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and not staging_folder(out).exists()


@pytest.mark.parametrize("edit, message", [
    (("--beta", "0"), "--beta=0.0 is invalid"),
    (("--candidates", "1"), "--candidates=1 is invalid"),
    (("--lora-rank", "-1"), "--lora-rank=-1 is invalid"),
    (("--reward", "dpo", "--reward-beta", "0.1"), "reward kind 'dpo' reads the aligned model"),
    (("--reward", "python:nan_reward:reward"), "the reward is not a finite number on 48 of 48 candidates"),
    (("--reward", "python:flat_reward:reward"), "no preference pair: the reward is equal"),
    (("--prior", "GPT2"), "has no chat template"),
])
def test_bad_inputs_are_one_line_exit_2_and_write_no_model(setup, monkeypatch, capsys, edit, message):
    tiny, prompts, tmp = setup
    args = align_args(tiny.llama, prompts, tmp / "bad")
    flag, value, *more = edit
    args += more
    if flag in args:
        args[args.index(flag) + 1] = tiny.gpt2 if value == "GPT2" else value
    else:
        args += [flag, value]
    if value == "GPT2":
        args.append("--chat-template")
    code, _, err = cli(monkeypatch, capsys, *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # (score's warnings before)
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert not (tmp / "bad").exists()


def test_missing_trl_names_the_extra(setup, monkeypatch, capsys):
    import importlib.util

    tiny, prompts, tmp = setup
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trl" else real(name, *a))
    code, _, err = cli(monkeypatch, capsys, *align_args(tiny.llama, prompts, tmp / "x"))
    assert code == 2 and "TRL is not installed" in err and 'pip install -e ".[align]"' in err


def test_run_with_align_makes_the_pair_and_the_dpo_identity_holds(setup, monkeypatch, capsys):
    tiny, prompts, tmp = setup
    config = tmp / "exp.toml"
    config.write_text(f"""
[models.prior]
name = "{tiny.llama}"
device = "cpu"

[prompts]
file = "{prompts}"

[align]
beta = 0.5
seed = 0
candidates = 4
max_new_tokens = 6
epochs = 2
learning_rate = 1e-3
train_batch_size = 2
[align.reward]
kind = "python:even_reward:reward"

[sampling]
adaptors = ["ancestral", "top_k=5"]
num_generations = 3
max_new_tokens = 6
seed = 1

[reward]
kind = "dpo"
beta = 0.5

[rewards.even]
kind = "python:even_reward:reward"

[analysis]
imh_steps = 200
corpora = 20
corpus_size = 8
""")
    code, out, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 0, err
    assert (tmp / "run" / "aligned" / "model.safetensors").is_file()
    scored = pd.read_parquet(tmp / "run" / "scored")
    assert {"reward", "reward_even"} <= set(scored.columns)
    done = scored[scored[Col.FINISHED]]
    # the implicit DPO reward is 0.5 (log p+ - log p): the identity holds on every string
    residual = done[Col.LOGP_PRIOR] + done[Col.REWARD] / 0.5 - done[Col.LOGP_ALIGNED]
    assert float(np.abs(residual).max()) < 1e-9
    summary = json.loads((tmp / "run" / "analysis" / "summary.json").read_text())
    assert "even" in summary["rewards"]
    assert "aligned vs prior (T = 1), reward_even" in out and "DPO identity" in out
    # rerun: every stage reused; another beta: retrained, the old model and its corpus moved aside
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 0 and "align: reused" in err
    config.write_text(config.read_text().replace("beta = 0.5\nseed = 0", "beta = 0.25\nseed = 0"))
    code, _, err = cli(monkeypatch, capsys, "run", config, "--out", tmp / "run")
    assert code == 0 and "align: ran" in err, err
    moved = list((tmp / "run" / "_superseded").glob("*/aligned"))
    assert len(moved) == 1 and (moved[0].parent / "corpus").is_dir()
    record = json.loads((tmp / "run" / "aligned" / "_run.json").read_text())
    assert record["settings"]["training"]["beta"] == 0.25


def _untimed(value):
    """A JSON value without TRL's wall-time fields (train_runtime, *_per_second), which no rerun repeats."""
    timed = ("runtime", "per_second")
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not any(t in k for t in timed)}
    return [_untimed(v) for v in value] if isinstance(value, list) else value


def _align_files(folder: Path) -> dict[str, bytes]:
    """The model folder's files, its two JSON logs without wall-time fields."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
             and p.name != ".pqtradeoff.lock"}
    for name in (TRAIN_LOG, "_run.json"):
        files[name] = json.dumps(_untimed(json.loads(files[name]))).encode()
    return files


def test_sigkill_at_three_points_then_rerun_gives_the_same_model_byte_for_byte(setup, monkeypatch, capsys):
    """Killed while the candidates are sampled, early in training and late in training, each time rerun:
    the final folder equals an uninterrupted run's (weights, tokenizer, pairs, candidates, records)."""
    tiny, prompts, tmp = setup
    out = tmp / "model"
    args = [str(a) for a in align_args(tiny.llama, prompts, out, "--epochs", 60)]
    argv = [sys.executable, "-m", "pqtradeoff", *args]
    src = Path(__file__).resolve().parents[2] / "src"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp), str(src)]), "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    reference = _align_files(out)
    shutil.rmtree(out)
    staging = staging_folder(out)
    trainer = staging / "_trainer"
    points = [(lambda: any((staging / "candidates").rglob("*.parquet")), 0.0), (trainer.exists, 0.3),
              (trainer.exists, 3.0)]
    for ready, delay in points:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, "align finished before the kill point"
        proc.kill()
        proc.wait()
        assert not out.exists()  # never half a model where the model goes
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert _align_files(out) == reference and not staging.exists()
