"""Ray executor scaling: generate + score on a tiny model, local executor vs Ray with 1 and 2 actors.

Every worker is given one CPU and one torch thread (the local executor: this process with
`torch.set_num_threads(1)`; Ray: actors with `cpus_per_actor=1`, which sets one torch thread), so the
comparison
is of workers, not of threads. Each configuration runs the real stages (`experiment.stages.run_generate` then
`experiment.stages.run_score`, fresh output folders) at two workload sizes, N and 2N shards. The marginal rate
(extra rows / extra seconds) excludes what every run pays once (Ray Data's pipeline start, the actors'
start and
model loads); the fixed cost is a run's time minus its rows at the marginal rate. `ray.init` (a local
instance)
is timed separately.

Goals (issue "Scale past one process"): 2 actors >= 1.6x the rows/s of 1 actor (start-up excluded), i.e.
scaling efficiency (2 actors / (2 x 1 actor)) >= 0.8; Ray with 1 actor within 10% of the local executor.

    PYTHONPATH=src python benchmarks/ray_scaling.py [--prompts 24] [--generations 3] [--repeats 2]

Needs the pqtradeoff[ray] extra. On a shared machine the figures move with the other load: the load average
is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from pqtradeoff.experiment.settings import (
    ComputeSettings,
    ExecutorSettings,
    GenerateSettings,
    ModelSpec,
    PromptSettings,
    RewardSettings,
    SamplingSettings,
    ScoreSettings,
)
from pqtradeoff.experiment.stages import ModelCache, run_generate, run_score
from pqtradeoff.testing import build_causal

ADAPTORS = ["ancestral", "top_k=5", "temperature=0.7,top_p=0.9", "temperature=1.3"]
WORDS = "the a cat dog sat ran on mat hat big small red blue green hello world how are you".split()


def write_prompts(path: Path, n: int) -> Path:
    import json

    lines = [
        json.dumps({"prompt": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 5))})
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def settings(
    model: Path, prior: Path, prompts: Path, args, generations: int, executor: ExecutorSettings
) -> tuple[GenerateSettings, ScoreSettings]:
    compute = ComputeSettings(batch_size=args.batch, progress=False)
    gen = GenerateSettings(
        model=ModelSpec(name=str(model), device="cpu"),
        prompts=PromptSettings(file=prompts),
        sampling=SamplingSettings(
            adaptors=ADAPTORS,
            num_generations=generations,
            max_new_tokens=args.new_tokens,
            seed=0,
            prompt_block=args.prompt_block,
        ),
        compute=compute,
        executor=executor,
    )
    score = ScoreSettings(
        prior=ModelSpec(name=str(prior), device="cpu"),
        reward=RewardSettings(kind="dpo", beta=0.1),
        compute=compute,
        executor=executor,
    )
    return gen, score


def one_run(
    model, prior, prompts, args, generations, executor, root: Path, models: ModelCache
) -> tuple[int, float]:
    """(rows, seconds) of generate + score into fresh folders."""
    out = Path(tempfile.mkdtemp(dir=root))
    gen, score = settings(model, prior, prompts, args, generations, executor)
    began = time.perf_counter()
    g = run_generate(gen, out / "corpus", models)
    run_score(score, out / "corpus", out / "scored", models)
    return g.rows_written, time.perf_counter() - began


def best_run(model, prior, prompts, args, generations, executor, root, models) -> tuple[int, float]:
    """The fastest of `args.repeats` runs: on a shared machine the minimum is the least disturbed one."""
    runs = [
        one_run(model, prior, prompts, args, generations, executor, root, models) for _ in range(args.repeats)
    ]
    return min(runs, key=lambda r: r[1])


def measure(name, model, prior, prompts, args, executor, root, models) -> dict[str, float]:
    """Rows/s at N and 2N generations per prompt; marginal rate and fixed cost from the two."""
    n = args.generations
    rows1, t1 = best_run(model, prior, prompts, args, n, executor, root, models)
    rows2, t2 = best_run(model, prior, prompts, args, 2 * n, executor, root, models)
    marginal = (rows2 - rows1) / max(t2 - t1, 1e-9)
    fixed = t1 - rows1 / marginal
    print(
        f"  {name:<16} N: {rows1:5d} rows {t1:6.1f} s ({rows1 / t1:6.1f} rows/s)   2N: {rows2:5d} rows "
        f"{t2:6.1f} s "
        f"({rows2 / t2:6.1f} rows/s)   marginal {marginal:6.1f} rows/s   fixed {fixed:5.1f} s",
        flush=True,
    )
    return {"marginal": marginal, "fixed": fixed, "rate_2n": rows2 / t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument(
        "--generations", type=int, default=3, help="N: generations per prompt of the small run"
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-block", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each size; the fastest counts")
    args = parser.parse_args()
    import ray

    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}   cpus: {os.cpu_count()}   ray {ray.__version__}")
    with tempfile.TemporaryDirectory(prefix="pqray-bench-") as tmp:
        root = Path(tmp)
        model = build_causal(
            root / "aligned", "llama", seed=0, hidden=args.hidden, layers=args.layers, max_positions=128
        )
        prior = build_causal(
            root / "prior", "llama", seed=1, hidden=args.hidden, layers=args.layers, max_positions=128
        )
        prompts = write_prompts(root / "prompts.jsonl", args.prompts)
        shards = len(ADAPTORS) * args.generations * -(-args.prompts // args.prompt_block)
        print(
            f"workload N: {args.prompts} prompts x {args.generations} generations x {len(ADAPTORS)} "
            f"adaptors, "
            f"<= {args.new_tokens} new tokens, {shards} shards; model: {args.layers} layers, hidden "
            f"{args.hidden}"
        )
        local = measure(
            "local, 1 thread", model, prior, prompts, args, ExecutorSettings(), root, ModelCache(quiet=True)
        )

        began = time.perf_counter()
        ray.init(
            num_cpus=2,
            _temp_dir=str(root / "ray"),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=False,
        )
        startup = time.perf_counter() - began
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"  ray.init (local instance): {startup:.1f} s")
        models = ModelCache(quiet=True)  # the driver's copy (tokenizer key, prompt encoding), loaded once
        one = measure(
            "ray, 1 actor", model, prior, prompts, args, ExecutorSettings(kind="ray", actors=1), root, models
        )
        two = measure(
            "ray, 2 actors", model, prior, prompts, args, ExecutorSettings(kind="ray", actors=2), root, models
        )
        ray.shutdown()

    speedup = two["marginal"] / one["marginal"]
    print(f"\nload average after: {os.getloadavg()}")
    print(
        f"Ray fixed start-up: ray.init {startup:.1f} s once per process, plus {one['fixed']:.1f} s (1 "
        f"actor) / "
        f"{two['fixed']:.1f} s (2 actors) per generate + score run (two pipelines: actor start, model loads)"
    )
    print(
        f"2 actors vs 1 actor, start-up excluded: {speedup:.2f}x   scaling efficiency {speedup / 2:.2f}   "
        f"(goal >= 1.6x, 0.80)"
    )
    print(
        f"Ray 1 actor vs local 1 thread, start-up excluded: {one['marginal'] / local['marginal']:.2f}   "
        f"(goal >= 0.90); with start-up, at 2N: {one['rate_2n'] / local['rate_2n']:.2f}"
    )


if __name__ == "__main__":
    main()
