"""Synthetic scored corpora for the analysis tests: the contract's columns, a known trade-off."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pqtradeoff.columns import extra_reward_columns
from pqtradeoff.pipeline.corpus import GENERATED_SCHEMA, SCORE_COLUMNS, write_shard

SCORED_SCHEMA = pa.schema(list(GENERATED_SCHEMA) + list(SCORE_COLUMNS))


def make_scored(seed: int = 0, families=("ancestral", "top_k=30"), temps=(0.5, 1.0, 1.5),
                n: int = 80) -> pd.DataFrame:
    """A scored corpus whose strings correlate positively within a config while configs trade off
    negatively."""
    rng = np.random.default_rng(seed)
    frames = []
    for f_index, fam in enumerate(families):
        for temp in temps:
            spec = f"temperature={temp}" + ("" if fam == "ancestral" else f",{fam}")
            base = rng.normal(size=n)
            logq = -30.0 + rng.normal(size=n)
            frames.append(pd.DataFrame({
                "prompt_id": np.arange(n) // 2, "prompt": "Human: hi Assistant:",
                "sample_id": np.arange(n) % 2,
                "adaptor": spec, "text": "x", "prompt_token_ids": [[1, 2]] * n, "token_ids": [[3, 4, 0]] * n,
                "finished": rng.random(n) > 0.05,
                "logq": logq, "logp_aligned": logq + rng.normal(scale=0.5, size=n),
                "log_weight": 0.4 * base + rng.normal(scale=0.3, size=n),
                "logp_prior": -40.0 - 20.0 * temp - 3.0 * f_index + 5.0 * base,
                "reward": 2.0 * temp + 0.5 * f_index + 0.3 * base + rng.normal(scale=0.5, size=n),
            }))
    return pd.concat(frames, ignore_index=True)


def write_scored(frame: pd.DataFrame, directory: Path, shards: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    schema = SCORED_SCHEMA if set(SCORED_SCHEMA.names) <= set(frame.columns) else None
    if schema is not None and "prior_context" in frame.columns:
        schema = schema.append(pa.field("prior_context", pa.string()))
    for name in extra_reward_columns(frame.columns) if schema is not None else []:
        kind = pa.float64() if pd.api.types.is_float_dtype(frame[name]) else pa.string()
        schema = schema.append(pa.field(name, kind))
    for k, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        table = pa.Table.from_pandas(frame.iloc[part].reset_index(drop=True), schema=schema,
                                     preserve_index=False)
        write_shard(table, directory / f"scored-{k:05d}.parquet")
    (directory / "_run.json").write_text(json.dumps({"command": "score", "settings": {"x": 1}}))
    return directory
