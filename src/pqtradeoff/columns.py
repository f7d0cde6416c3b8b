"""The names of the scored corpus's columns: the one source every producer and consumer reads them from.

docs/scored-corpus.md says what each column means. The names live at the base of the package (not in
`pipeline.corpus`) because the models read them too: a step model's `score_batch` takes a corpus batch.
"""

from __future__ import annotations

import re


class Col:
    """Column names of the corpus table (plain strings, so `df[Col.REWARD]` is `df["reward"]`)."""

    # written by `generate`
    PROMPT_ID = "prompt_id"
    PROMPT = "prompt"
    SAMPLE_ID = "sample_id"
    ADAPTOR = "adaptor"
    TEXT = "text"
    PROMPT_TOKEN_IDS = "prompt_token_ids"
    TOKEN_IDS = "token_ids"
    FINISHED = "finished"
    LOGQ = "logq"
    LOGP_ALIGNED = "logp_aligned"
    LOG_WEIGHT = "log_weight"
    COMPONENT = "component"
    BON_REWARDS = "bon_rewards"  # best-of-N rows: every candidate's reward, in candidate order
    BON_KEPT = "bon_kept"  # best-of-N rows: the kept candidate's index among them
    TOKEN_LOGQ = "token_logq"
    TOKEN_LOGP_ALIGNED = "token_logp_aligned"
    TOKEN_LOG_Z = "token_log_z"
    # written by `score`
    LOGP_PRIOR = "logp_prior"
    REWARD = "reward"
    PRIOR_TOKENIZATION = "prior_tokenization"
    PRIOR_CONTEXT = "prior_context"
    # written by `score --what-if`: per string, one value per adaptor of the scoring run's `what_if_adaptors`
    WHAT_IF_LOGQ = "what_if_logq"  # log q_a(y) under the aligned model, teacher-forced
    WHAT_IF_LOG_WEIGHT = "what_if_log_weight"  # sum_t log Z_t under adaptor a


#: The key of a row: one sampled string. A repeated key is a copied row, never a second independent string.
ROW_KEY = (Col.PROMPT_ID, Col.SAMPLE_ID, Col.ADAPTOR)

#: The prefix of every further reward's column (`reward_<name>`), beside the primary `reward`.
EXTRA_REWARD_PREFIX = "reward_"
_REWARD_NAME = re.compile(r"[a-z][a-z0-9_]*")


def reward_column(name: str) -> str:
    """The column of the further reward called `name` (lower-case letters, digits and '_')."""
    if not _REWARD_NAME.fullmatch(name):
        raise ValueError(f"reward name {name!r}: use lower-case letters, digits and '_', "
                         "starting with a letter")
    return EXTRA_REWARD_PREFIX + name


def extra_reward_columns(columns) -> list[str]:
    """The further reward columns (`reward_<name>`) among `columns`, in their order."""
    return [c for c in columns if c.startswith(EXTRA_REWARD_PREFIX) and _REWARD_NAME.fullmatch(
        c[len(EXTRA_REWARD_PREFIX):])]
