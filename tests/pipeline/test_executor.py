"""The Ray executor writes the local executor's files: the same shard names, the same token ids bit for bit
and
the same scores to float tolerance, on the tiny HF models and one local Ray instance (CPU) per test session.
A run stopped mid-way resumes under Ray; a failing actor stops the run with its error in one line."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pqtradeoff.errors import PQError

from cli_helpers import cli, write_config, write_prompts

SPECS = ["ancestral", "temperature=0.7,top_k=5", "temperature=1.3,top_p=0.8", "typical_p=0.9"]
TEXTS = ["hello world", "why", "tell me a story about the moon please", "the cat sat", "how are you", "I"]


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the whole session, its temp dir inside the session's tmp folder."""
    ray = pytest.importorskip(
        "ray", reason='ray is not installed: pip install -e ".[ray]" to run the Ray tests'
    )
    pytest.importorskip("ray.data", reason='ray[data] is not installed: pip install -e ".[ray]"')
    began = time.perf_counter()
    ray.init(
        num_cpus=2,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        configure_logging=False,
    )
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the failing loader below, in actors
    print(f"ray started in {time.perf_counter() - began:.1f} s")
    yield ray
    ray.shutdown()


def generate_args(model: Path, prompts: Path, out: Path, *extra) -> list:
    args = [
        "generate",
        "--model",
        model,
        "--prompts",
        prompts,
        "--num-generations",
        2,
        "--max-new-tokens",
        8,
        "--seed",
        7,
        "--prompt-block",
        2,
        "--device",
        "cpu",
        "--no-progress",
        "--save-token-logprobs",
        "--out",
        out,
        *extra,
    ]
    for s in SPECS:
        args += ["--adaptor", s]
    return args


def score_args(tiny_hf, corpus: Path, out: Path, *extra) -> list:
    return [
        "score",
        corpus,
        "--prior",
        tiny_hf.prior,
        "--reward-model",
        tiny_hf.reward,
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
        *extra,
    ]


def read(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values(["adaptor", "prompt_id", "sample_id"], ignore_index=True)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet"))


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame, float_columns: list[str]) -> None:
    assert len(got) == len(want)
    for column in ("adaptor", "prompt_id", "sample_id", "text", "finished"):
        assert got[column].tolist() == want[column].tolist(), column
    assert [list(t) for t in got["token_ids"]] == [list(t) for t in want["token_ids"]]  # bit for bit
    for column in float_columns:
        np.testing.assert_allclose(
            got[column].to_numpy(float), want[column].to_numpy(float), rtol=1e-6, atol=1e-6, err_msg=column
        )


@pytest.fixture(scope="module")
def local_run(tiny_hf, tmp_path_factory, one_thread):
    """Generate and score on the local executor (one torch thread): the reference."""
    root = tmp_path_factory.mktemp("local")
    prompts = write_prompts(root / "p.jsonl", TEXTS)
    monkeypatch = pytest.MonkeyPatch()
    capsys = _NoCapture()
    assert cli(monkeypatch, capsys, *generate_args(tiny_hf.llama, prompts, root / "corpus"))[0] == 0
    assert cli(monkeypatch, capsys, *score_args(tiny_hf, root / "corpus", root / "scored"))[0] == 0
    monkeypatch.undo()
    return prompts, root / "corpus", root / "scored"


def spy_on_actors(monkeypatch) -> list[dict]:
    """The status rows the Ray executor returns, recorded as they come back."""
    from pqtradeoff.pipeline import executor

    statuses: list[dict] = []
    real = executor.map_shards

    def spy(*args, **kwargs):
        for status in real(*args, **kwargs):
            statuses.append(status)
            yield status

    monkeypatch.setattr(executor, "map_shards", spy)
    return statuses


class _NoCapture:
    """`cli` reads captured output; a module fixture has no capsys, so it reads nothing."""

    def readouterr(self):
        from types import SimpleNamespace

        return SimpleNamespace(out="", err="")


@pytest.mark.ray
def test_ray_generate_and_score_equal_the_local_executor(
    ray_session, tiny_hf, local_run, tmp_path, monkeypatch, capsys
):
    prompts, corpus, scored = local_run
    statuses = spy_on_actors(monkeypatch)
    ray_args = ["--executor", "ray", "--actors", 2]
    code, out, err = cli(
        monkeypatch, capsys, *generate_args(tiny_hf.llama, prompts, tmp_path / "corpus", *ray_args)
    )
    assert code == 0, err
    assert names(tmp_path / "corpus") == names(corpus) and len(names(corpus)) == len(SPECS) * 2 * 3
    # every unit came from an actor: a block of rows under the grid's 4 adaptors is one group (pack_adaptors),
    # 3 prompt blocks x 2 sample ids of them, covering every row
    units = len(statuses)
    assert units == 3 * 2 and all(s["name"].endswith(f"+{len(SPECS) - 1}") for s in statuses)
    assert {s["name"].rsplit("+", 1)[0] for s in statuses} <= set(names(corpus))
    assert sum(s["rows"] for s in statuses) == len(read(corpus))
    assert len({s["pid"] for s in statuses}) == 2  # two replicas, in two processes other than this one
    assert all(s["pid"] != os.getpid() for s in statuses)
    assert_same_rows(read(tmp_path / "corpus"), read(corpus), ["logq", "logp_aligned", "log_weight"])
    for column in ("token_logq", "token_logp_aligned", "token_log_z"):
        got, want = read(tmp_path / "corpus")[column], read(corpus)[column]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)

    code, out, err = cli(
        monkeypatch, capsys, *score_args(tiny_hf, tmp_path / "corpus", tmp_path / "scored", *ray_args)
    )
    assert code == 0, err
    assert names(tmp_path / "scored") == names(scored)
    assert sorted(s["name"] for s in statuses[units:]) == names(scored)
    assert_same_rows(read(tmp_path / "scored"), read(scored), ["logp_prior", "reward"])
    assert (tmp_path / "scored" / "_score_report.json").is_file()


@pytest.mark.ray
def test_a_run_stopped_mid_way_resumes_under_ray(
    ray_session, tiny_hf, local_run, tmp_path, monkeypatch, capsys
):
    """Shards lost (as if the run had been killed before writing them) are the only ones written again, and
    the
    folder ends equal to the local executor's."""
    prompts, corpus, _ = local_run
    out = tmp_path / "corpus"
    args = generate_args(tiny_hf.llama, prompts, out, "--executor", "ray", "--actors", 2)
    assert cli(monkeypatch, capsys, *args)[0] == 0
    lost = names(out)[::3]
    kept = {n: (out / n).stat().st_mtime_ns for n in names(out) if n not in lost}
    for name in lost:
        (out / name).unlink()
    code, stdout, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert f"{len(lost)} of {len(names(corpus))} shards written, {len(kept)} reused" in stdout
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # untouched
    assert names(out) == names(corpus)
    assert_same_rows(read(out), read(corpus), ["logq", "logp_aligned", "log_weight"])


class FailingLoader:
    """Loads the aligned model; its `sample` raises on one adaptor's rows (as a GPU running out of memory
    would)."""

    def __init__(self, path: str, fail_on: str) -> None:
        self.path, self.fail_on = path, fail_on

    def __call__(self):
        from pqtradeoff.models.hf import HFModel

        model = HFModel(self.path, device="cpu")
        sample, fail_on = model.sample, self.fail_on

        def failing(requests, **kw):
            if any(str(r.adaptor) == fail_on for r in requests):  # its shards, or a group holding one
                raise RuntimeError("CUDA out of memory (simulated)\nsecond line of the error")
            return sample(requests, **kw)

        model.sample = failing
        return model


@pytest.mark.ray
def test_a_failing_actor_fails_the_run_in_one_line_and_a_rerun_resumes(
    ray_session, tiny_hf, local_run, tmp_path
):
    from pqtradeoff.experiment.settings import ExecutorSettings
    from pqtradeoff.models.hf import HFModel
    from pqtradeoff.pipeline.generate import PromptRecord, generate_corpus
    from pqtradeoff.sampling import adaptors

    _, corpus, _ = local_run
    lm = HFModel(str(tiny_hf.llama), device="cpu")
    records = [PromptRecord(i, t, lm.encode_prompt(t)) for i, t in enumerate(TEXTS)]
    grid = [adaptors.parse(s) for s in SPECS]
    executor = ExecutorSettings(kind="ray", actors=2)
    common = dict(
        num_generations=2,
        max_new_tokens=8,
        seed=7,
        batch_size=None,
        out_dir=tmp_path / "c",
        settings={},
        progress=False,
        prompt_block=2,
        save_token_logprobs=True,
        executor=executor,
    )
    with pytest.raises(PQError) as err:
        generate_corpus(
            lm, records, grid, load_model=FailingLoader(str(tiny_hf.llama), str(grid[1])), **common
        )
    message = str(err.value)
    assert (
        "\n" not in message and "a Ray actor failed: RuntimeError: CUDA out of memory (simulated)" in message
    )
    assert "rerun" in message
    assert len(names(tmp_path / "c")) < len(names(corpus))
    result = generate_corpus(
        lm, records, grid, load_model=lambda: HFModel(str(tiny_hf.llama), device="cpu"), **common
    )
    assert result.reused + result.written == result.shards and result.written >= 6  # the failed adaptor's 6
    assert names(tmp_path / "c") == names(corpus)
    assert [list(t) for t in read(tmp_path / "c")["token_ids"]] == [
        list(t) for t in read(corpus)["token_ids"]
    ]


@pytest.mark.ray
def test_run_command_with_the_ray_executor(ray_session, tiny_hf, tmp_path, monkeypatch, capsys):
    """`pqtradeoff run CONFIG --executor ray` writes the corpus and scored corpus a local run writes."""

    prompts = write_prompts(tmp_path / "p.jsonl", ["hello world", "why", "tell me a story", "the cat sat"])
    config = write_config(tmp_path / "exp.toml", tiny_hf.llama, tiny_hf.prior, prompts)
    assert cli(monkeypatch, capsys, "run", config, "--out", tmp_path / "local")[0] == 0
    code, _, err = cli(
        monkeypatch, capsys, "run", config, "--out", tmp_path / "ray", "--executor", "ray", "--actors", 2
    )
    assert code == 0, err
    for stage in ("corpus", "scored"):
        assert names(tmp_path / "ray" / stage) == names(tmp_path / "local" / stage)
        assert_same_rows(
            read(tmp_path / "ray" / stage),
            read(tmp_path / "local" / stage),
            ["logq", "log_weight"] + (["logp_prior", "reward"] if stage == "scored" else []),
        )


# ------------------------------------------------------------------------------------------------ bad input
def test_executor_ray_without_ray_is_one_line_naming_the_extra(tiny_hf, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    prompts = write_prompts(tmp_path / "p.jsonl", TEXTS)
    code, _, err = cli(
        monkeypatch, capsys, *generate_args(tiny_hf.llama, prompts, tmp_path / "c", "--executor", "ray")
    )
    assert code == 2 and err.count("\n") == 1 and 'pip install "pqtradeoff[ray]"' in err, err
    assert not list((tmp_path / "c").glob("*.parquet"))


def test_unreachable_ray_address_is_one_line_within_seconds(tiny_hf, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray", reason='ray is not installed: pip install -e ".[ray]"')
    prompts = write_prompts(tmp_path / "p.jsonl", TEXTS)
    began = time.perf_counter()
    code, _, err = cli(
        monkeypatch,
        capsys,
        *generate_args(tiny_hf.llama, prompts, tmp_path / "c", "--ray-address", "127.0.0.1:9"),
    )  # implies ray
    assert code == 2 and err.count("\n") == 1 and "no Ray cluster answers at 127.0.0.1:9" in err, err
    assert time.perf_counter() - began < 30


@pytest.mark.parametrize(
    "address, message",
    [
        ("auto", None),
        ("ray://h", ("h", 10001)),
        ("h:7", ("h", 7)),
        ("h", ("h", 6379)),
        ("h:x", "is not host:port"),
    ],
)
def test_parse_address(address, message):
    from pqtradeoff.pipeline.executor import parse_address

    if isinstance(message, str):
        with pytest.raises(PQError, match=message):
            parse_address(address)
    else:
        assert parse_address(address) == message


def test_unknown_backend_and_executor_are_one_line(tiny_hf, tmp_path, monkeypatch, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", TEXTS)
    for extra, words in (
        (["--backend", "nope"], "--backend='nope' is invalid"),
        (["--executor", "spark"], "--executor='spark' is invalid"),
    ):
        code, _, err = cli(
            monkeypatch, capsys, *generate_args(tiny_hf.llama, prompts, tmp_path / "c", *extra)
        )
        assert code == 2 and err.count("\n") == 1 and words in err, err
