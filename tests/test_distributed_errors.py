"""Bad input with process groups: the same clear error on every rank (never a hang), whether one rank alone
got it wrong or the ranks disagree."""

import re

import pytest
import torch.distributed as dist

from endokernel import fused_endogenous_reward, fused_token_logprobs, token_statistics

import ranks
from cases import make_case

CASE = make_case(batch=2, seq_len=9, vocab=31, dim=8, seed=5)
BLOCKS = [16, 15]


def block(rank):
    lo = sum(BLOCKS[:rank])
    return CASE.weight[lo : lo + BLOCKS[rank]]


def reward(hidden=None, weight=None, **kwargs):
    arguments = dict(prompt_len=CASE.prompt_len, attention_mask=CASE.attention_mask) | kwargs
    return fused_endogenous_reward(CASE.hidden if hidden is None else hidden, weight, CASE.ids, **arguments)


def errors_on_every_rank(world, call):
    """(exception type, message) raised on each rank by ``call(rank)``; fails if a rank raised nothing."""
    results = ranks.run(world, lambda rank, world: ranks.error_of(lambda: call(rank)))
    assert all(r is not None for r in results), f"some ranks raised nothing: {results}"
    assert len(set(results)) == 1, f"ranks raised different errors: {results}"
    return results[0]


def other_ids(rank):
    ids = CASE.ids.clone()
    ids[0, 1] = (ids[0, 1] + rank) % 31  # rank 1's ids differ in one place
    return ids


BAD = {
    "vocab_size": (2, lambda r: reward(weight=block(r), tp_group=dist.group.WORLD, vocab_size=32),
                   "ValueError", r"vocab_size = 32, but the vocabulary blocks of tp_group \[16, 15\] add up to 31"),
    "ids differ": (2, lambda r: fused_endogenous_reward(CASE.hidden, block(r), other_ids(r), prompt_len=3,
                                                        tp_group=dist.group.WORLD),
                   "ValueError", r"ids: the ranks of tp_group \(global ranks \[0, 1\]\) pass different values"),
    "prompt_len differs": (2, lambda r: reward(weight=block(r), tp_group=dist.group.WORLD,
                                               prompt_len=[1, 1 + r]),
                           "ValueError", "prompt_len: the ranks of tp_group"),
    "scalars differ": (2, lambda r: reward(weight=block(r), tp_group=dist.group.WORLD, gamma=0.9 + 0.05 * r),
                       "ValueError", "pass different scalar arguments"),
    "chunks do not cover ids": (2, lambda r: reward(CASE.hidden[:, :5], CASE.weight, cp_group=dist.group.WORLD),
                                "ValueError", r"hold \[5, 5\] positions per row \(sum 10\), but ids have 9"),
    "one rank's head is bad": (3, lambda r: reward(weight=CASE.weight[:, : 8 - (r == 1)],
                                                   tp_group=dist.group.WORLD),
                               "ValueError", "rank 1: hidden has D=8 features but lm_head has D=7"),
    "one rank's alpha is bad": (2, lambda r: reward(weight=block(r), tp_group=dist.group.WORLD, alpha=1 - r),
                                "ValueError", "rank 1: alpha must be"),
    "ids out of the whole vocabulary": (2, lambda r: fused_token_logprobs(
        CASE.hidden, block(r), CASE.ids + 1, tp_group=dist.group.WORLD), "ValueError",
        r"ids must lie in \[0, 31\)"),
    "one rank's targets have another shape": (2, lambda r: token_statistics(
        CASE.hidden, block(r), CASE.ids[:, : 9 - r], tp_group=dist.group.WORLD), "ValueError",
        "rank 1: targets must have hidden's leading shape"),
    "one rank's prompt_len is a float": (3, lambda r: reward(weight=CASE.weight, tp_group=dist.group.WORLD,
                                                             prompt_len=1.5 if r == 2 else 1),
                                         "TypeError", "rank 2: prompt_len must be an int"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_on_every_rank(name):
    world, call, kind, pattern = BAD[name]
    error_type, message = errors_on_every_rank(world, call)
    assert error_type == kind
    assert re.search(pattern, message), message


def test_a_bad_rank_in_a_grid_stops_every_rank():
    def call(rank):
        rows = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        columns = [dist.new_group([0, 2]), dist.new_group([1, 3])]
        tp, cp = rank % 2, rank // 2
        hidden = CASE.hidden[:, [0, 5][cp] : [5, 9][cp]]
        bad_mask = CASE.attention_mask if rank != 3 else 1 - CASE.attention_mask
        reward(hidden, block(tp), attention_mask=bad_mask, tp_group=rows[cp], cp_group=columns[tp])

    # rank 3's mask differs from its tp peer's (rank 2): the tp exchange finds it, the cp exchange tells 0 and 1
    error_type, message = errors_on_every_rank(4, call)
    assert error_type == "ValueError" and message.startswith("attention_mask: the ranks of tp_group"), message


def test_bad_groups_are_refused_before_any_collective():
    with pytest.raises(ValueError, match="tp_group is given, but torch.distributed is not initialised"):
        reward(weight=CASE.weight, tp_group=object())

    def rank_fn(rank, world):
        from torch.distributed.tensor import Replicate, distribute_tensor, init_device_mesh

        replicated = distribute_tensor(CASE.weight, init_device_mesh("cpu", (world,)), [Replicate()])
        calls = [lambda: reward(weight=CASE.weight, tp_group="world"), lambda: reward(weight=CASE.weight, cp_group=7),
                 lambda: reward(weight=CASE.weight, tp_group=dist.group.WORLD, cp_group=dist.group.WORLD),
                 lambda: reward(weight=replicated)]
        return [ranks.error_of(call) for call in calls]

    for found in ranks.run(2, rank_fn):
        assert found[0] == ("TypeError", "tp_group must be a torch.distributed ProcessGroup, got str")
        assert found[1] == ("TypeError", "cp_group must be a torch.distributed ProcessGroup, got int")
        assert found[2] == ("ValueError", "tp_group and cp_group must be different groups (a grid's rows and columns)")
        assert found[3][0] == "ValueError"
        assert "must be sharded Shard(0) on a 1-D device mesh" in found[3][1]
