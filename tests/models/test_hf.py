"""HFModel and HFRewardModel against transformers' own forward pass on single, unpadded sequences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pqtradeoff.errors import PQError
from pqtradeoff.models.hf import HFModel, HFRewardModel

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 2e-5
PROMPTS = ["hello world how are you", "the cat", "tell me a story about the sun please"]
CONTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request, tiny_hf) -> HFModel:
    return HFModel(str(getattr(tiny_hf, request.param)), device="cpu")


def oracle_logits(lm: HFModel, ids: list[int]) -> torch.Tensor:
    """transformers' own logits [L, V] for one sequence: no padding, no cache, default positions."""
    with torch.no_grad():
        return lm.model(torch.tensor([ids])).logits[0].float()


def test_continuation_logits_match_unpadded_forward(lm):
    prompts = [lm.encode_prompt(p) for p in PROMPTS]
    got = lm.continuation_logits(prompts, CONTS)
    assert got.dtype == torch.float32 and got.shape == (3, max(map(len, CONTS)), lm.vocab_size)
    for b, (p, c) in enumerate(zip(prompts, CONTS, strict=True)):
        want = oracle_logits(lm, p + c)[len(p) - 1: len(p) + len(c) - 1]
        torch.testing.assert_close(got[b, : len(c)], want, atol=ATOL, rtol=0)


def test_batch_composition_does_not_change_a_row(lm):
    prompts = [lm.encode_prompt(p) for p in PROMPTS]
    alone = lm.continuation_logits(prompts[1:2], CONTS[1:2])[0]
    mixed = lm.continuation_logits(prompts[::-1], CONTS[::-1])[1, : len(CONTS[1])]
    torch.testing.assert_close(mixed, alone, atol=ATOL, rtol=0)


def test_start_and_step_agree_with_teacher_forcing(lm):
    prompts = [lm.encode_prompt(p) for p in PROMPTS]
    forced = lm.continuation_logits(prompts, CONTS)
    logits, state = lm.start(prompts)
    assert logits.dtype == torch.float32 and logits.shape == (3, lm.vocab_size)
    for t in range(max(map(len, CONTS))):
        for b, c in enumerate(CONTS):
            if t < len(c):
                torch.testing.assert_close(logits[b], forced[b, t], atol=ATOL, rtol=0)
        feed = torch.tensor([c[t] if t < len(c) else lm.eos_token_id for c in CONTS])
        logits, state = lm.step(state, feed)


def test_start_of_each_prompt_matches_its_own_forward(lm):
    prompts = [lm.encode_prompt(p) for p in PROMPTS]
    logits, _ = lm.start(prompts)
    for b, p in enumerate(prompts):
        torch.testing.assert_close(logits[b], oracle_logits(lm, p)[-1], atol=ATOL, rtol=0)


def test_keep_restricts_the_cache_to_the_chosen_rows(lm):
    prompts = [lm.encode_prompt(p) for p in PROMPTS]
    _, state = lm.start(prompts)
    _, state = lm.step(state, torch.tensor([5, 6, 7]))
    state = lm.keep(state, torch.tensor([2, 0]))
    logits, state = lm.step(state, torch.tensor([8, 9]))
    torch.testing.assert_close(logits[0], oracle_logits(lm, prompts[2] + [7, 8])[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits[1], oracle_logits(lm, prompts[0] + [5, 9])[-1], atol=ATOL, rtol=0)
    logits, _ = lm.step(lm.keep(state, torch.tensor([1])), torch.tensor([10]))
    torch.testing.assert_close(logits[0], oracle_logits(lm, prompts[0] + [5, 9, 10])[-1], atol=ATOL, rtol=0)


def test_empty_and_all_empty_continuations(lm):
    prompts = [lm.encode_prompt(p) for p in PROMPTS[:2]]
    assert lm.continuation_logits(prompts, [[], []]).shape == (2, 0, lm.vocab_size)
    got = lm.continuation_logits(prompts, [[], [4, 5]])
    torch.testing.assert_close(got[1], oracle_logits(lm, prompts[1] + [4, 5])[len(prompts[1]) - 1:-1],
                               atol=ATOL, rtol=0)


def test_empty_prompt_gets_bos_or_eos(tiny_hf):
    llama = HFModel(str(tiny_hf.llama), device="cpu")
    gpt2 = HFModel(str(tiny_hf.gpt2), device="cpu")
    assert llama.encode_prompt("") == [llama.tokenizer.convert_tokens_to_ids("<s>")] == llama.empty_context()
    eos = gpt2.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert gpt2.encode_prompt("") == [eos] == gpt2.empty_context() and gpt2.eos_token_id == eos
    assert gpt2.encode_prompt("hello") == [gpt2.tokenizer.get_vocab()["hello"]]  # GPT-2 adds no BOS
    logits, _ = gpt2.start([gpt2.encode_prompt("")])
    torch.testing.assert_close(logits[0], oracle_logits(gpt2, [eos])[-1], atol=ATOL, rtol=0)


def test_template_and_chat_template(tiny_hf):
    path = str(tiny_hf.llama)
    plain = HFModel(path, device="cpu", template="Human : {prompt} Assistant :")
    vocab = plain.tokenizer.get_vocab()
    want = [vocab[w] for w in "<s> Human : hello world Assistant :".split()]
    assert plain.encode_prompt("hello world") == want
    chat = HFModel(path, device="cpu", chat_template=True)
    assert chat.encode_prompt("hello") == [vocab[w] for w in "<s> user : hello . assistant :".split()]
    assert plain.encode_continuation("the cat") == [vocab["the"], vocab["cat"]]  # no BOS
    assert plain.decode([vocab["the"], vocab["cat"], plain.eos_token_id]) == "the cat"
    with pytest.raises(PQError, match="slot"):
        HFModel(path, device="cpu", template="Human: Assistant:")
    with pytest.raises(PQError, match="not both"):
        HFModel(path, device="cpu", template="{prompt}", chat_template=True)
    with pytest.raises(PQError, match="no chat template"):
        HFModel(str(tiny_hf.gpt2), device="cpu", chat_template=True)


def test_tokenizer_key_matches_exactly_identical_tokenizers(tiny_hf):
    keys = {name: HFModel(str(getattr(tiny_hf, name)), device="cpu").tokenizer_key
            for name in ("llama", "prior", "gpt2", "other")}
    assert keys["llama"] == keys["prior"]  # same tokenizer, different weights
    assert len({keys["llama"], keys["gpt2"], keys["other"]}) == 3
    assert HFModel(str(tiny_hf.llama), device="cpu").tokenizer_key == keys["llama"]


def test_model_facts_and_bad_settings(tiny_hf):
    lm = HFModel(str(tiny_hf.llama), device="cpu", dtype="bfloat16")
    assert lm.vocab_size == len(lm.tokenizer) and lm.max_length == 64
    logits, _ = lm.start([lm.encode_prompt("hi")])
    assert logits.dtype == torch.float32
    with pytest.raises(PQError, match="dtype='float8'"):
        HFModel(str(tiny_hf.llama), dtype="float8")
    with pytest.raises(PQError, match="device='tpu'"):
        HFModel(str(tiny_hf.llama), device="tpu")
    with pytest.raises(PQError, match="does not exist"):
        HFModel(str(tiny_hf.llama / "missing"), device="cpu")


# -------------------------------------------------------------------------------------------- reward model
def test_reward_model_reads_the_last_real_token_when_pad_is_eos(tiny_hf):
    rm = HFRewardModel(str(tiny_hf.reward), device="cpu", batch_size=3)
    tok = rm.tokenizer
    assert tok.pad_token_id == tok.eos_token_id
    batch = pd.DataFrame({"prompt": ["hello", "tell me a story", "why"],
                          "text": ["the cat sat on the mat </s>", "no", "I do not know </s>"]})
    got = rm(batch)
    model, base = rm.model, getattr(rm.model, rm.model.base_model_prefix)
    for i, text in enumerate(rm.texts(list(batch["prompt"]), list(batch["text"]))):
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            want = model.score(base(ids).last_hidden_state)[0, -1, 0].item()  # single row, no padding
            own = model(ids).logits[0, 0].item()  # transformers' pad_token_id rule
        assert got[i] == pytest.approx(want, abs=1e-5)
        if ids[0, -1] == tok.eos_token_id:  # the rule skips a real trailing EOS: the bug we avoid
            assert abs(own - want) > 1e-4
        else:
            assert own == pytest.approx(want, abs=1e-5)
    one_by_one = HFRewardModel(str(tiny_hf.reward), device="cpu", batch_size=1)(batch)
    np.testing.assert_allclose(got, one_by_one, atol=1e-5, rtol=0)
    assert got.dtype == np.float64 and rm.name == f"reward_model({tiny_hf.reward})"


def test_reward_model_text_format(tiny_hf):
    rm = HFRewardModel(str(tiny_hf.reward), device="cpu", template="Human : {prompt} Assistant :")
    assert rm.texts(["hi", "hi"], ["yes", " no"]) == ["Human : hi Assistant : yes",
                                                      "Human : hi Assistant : no"]
    chat = HFRewardModel(str(tiny_hf.reward), device="cpu", chat_template=True)
    assert chat.texts(["hi"], ["yes"]) == ["<s>user : hi . assistant : yes . "]
    vocab = chat.tokenizer.get_vocab()
    assert chat.encode(chat.texts(["hi"], ["yes"]))[0][:2] == [vocab["<s>"], vocab["user"]]  # one BOS only
    with pytest.raises(PQError, match="batch_size=0"):
        HFRewardModel(str(tiny_hf.reward), device="cpu", batch_size=0)
    with pytest.raises(PQError, match="labels"):
        HFRewardModel(str(tiny_hf.reward), device="cpu", label=3)


def test_pad_id_outside_the_embedding_falls_back_to_eos(tmp_path):
    """A `<pad>` added to a tokenizer without resizing the model must not crash padded batches."""
    from pqtradeoff.models.hf import HFModel
    from pqtradeoff.testing import build_causal, word_tokenizer

    tok = word_tokenizer("gpt2")
    path = build_causal(tmp_path / "m", "gpt2", tokenizer=tok)
    tok.add_special_tokens({"pad_token": "<newpad>"})  # id == len(vocab): no embedding row
    tok.save_pretrained(path)
    model = HFModel(str(path), device="cpu", dtype="float32")
    assert model.pad_token_id == model.eos_token_id
    logits, _ = model.start([model.encode_prompt("a b c"), model.encode_prompt("a")])
    assert torch.isfinite(logits).all()


def test_every_end_of_string_id_is_collected(tiny_hf):
    from pqtradeoff.models.hf import HFModel, end_of_string_ids

    model = HFModel(str(tiny_hf.llama), device="cpu", dtype="float32")
    model.model.generation_config.eos_token_id = [model.eos_token_id, 7]
    assert end_of_string_ids(model.tokenizer, model.model) == [model.eos_token_id, 7]


def test_reward_model_warns_when_it_cuts_a_long_text(tiny_hf, pq_log):
    import pandas as pd

    from pqtradeoff.models.hf import HFRewardModel

    rm = HFRewardModel(str(tiny_hf.reward), device="cpu", batch_size=2)
    batch = pd.DataFrame({"prompt": ["hello", "hello"],
                          "text": ["the cat sat", " ".join(["the cat sat"] * 80)]})
    scores = rm(batch)
    assert np.isfinite(scores).all() and rm.truncated == 1
    assert any("1 of 2 texts are longer than its context" in r.getMessage() for r in pq_log.records)


def test_length_groups_cut_sorted_rows_into_groups_of_enough_tokens():
    from pqtradeoff.models.hf_layout import length_groups

    lengths = [5, 30, 6, 29, 7, 31, 8, 28, 4]
    groups = length_groups(lengths, 40)
    assert sorted(np.concatenate(groups).tolist()) == list(range(9))
    assert [[lengths[i] for i in g] for g in groups] == [[4, 5, 6, 7], [8, 28], [29, 30], [31]]
    padded = sum(max(lengths[i] for i in g) * len(g) for g in groups)
    assert padded < 0.7 * max(lengths) * len(lengths)  # against padding every row to the longest
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(lengths)  # groups follow the sorted order
    assert [g.tolist() for g in length_groups([10, 10, 11, 10], 5)] == [[0, 1, 2, 3]]  # little padding: one
    assert [g.tolist() for g in length_groups([], 5)] == [[]]
