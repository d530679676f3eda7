"""Vocab-parallel LM heads (tp, and DTensor), context-parallel chunks (cp) and a 2 x 2 tp x cp grid, on gloo ranks
forked from the test, against the single-process result: rewards, per-token rewards, statistics, log-probs,
entropy and every gradient; bitwise the same on every rank and on a rerun."""

import pytest
import torch
import torch.distributed as dist

from endokernel import fused_endogenous_reward, fused_token_logprobs, token_statistics

import ranks
from cases import make_case, relative_error

TOL = 1e-5  # normwise relative error against the single-process result (fp32)
# bf16: a CPU with bf16 units multiplies in bf16, whose rounding may follow the vocabulary's blocking; the
# gradients' shares are rounded to bf16 on each rank before the ranks add them
BF16_TOL, BF16_GRAD_TOL = 1e-3, 1e-2


def part(sizes, rank):
    """This rank's slice of a dimension split into ``sizes``, in rank order."""
    lo = sum(sizes[:rank])
    return slice(lo, lo + sizes[rank])


def leaves(case, block=slice(None), chunk=slice(None)):
    """Fresh leaf tensors: hidden (this chunk of positions), LM head and bias (this block of rows)."""
    bias = case.kwargs.get("bias")
    return (case.hidden[:, chunk].clone().requires_grad_(), case.weight[block].clone().requires_grad_(),
            None if bias is None else bias[block].clone().requires_grad_())


def reward_step(case, hidden, weight, bias, **groups):
    """Rewards, per-token rewards and the gradients of a loss made of both (the same loss on every rank)."""
    kwargs = {k: v for k, v in case.kwargs.items() if k != "bias"}
    rewards, per_token = fused_endogenous_reward(
        hidden, weight, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask, bias=bias,
        return_per_token=True, **kwargs, **groups)
    loss = (rewards * torch.linspace(0.5, 1.5, len(rewards))).sum() + 0.1 * (per_token**2).sum()
    loss.backward()
    return [rewards.detach(), per_token.detach(), hidden.grad, weight.grad, None if bias is None else bias.grad]


def twice(step):
    """The step's outputs, after checking that a rerun gives bitwise the same."""
    first, second = step(), step()
    for a, b in zip(first, second):
        assert (a is None and b is None) or torch.equal(a, b), "not bitwise reproducible"
    return first


def assert_close(actual, expected, seed, what, tol=TOL):
    assert relative_error(actual, expected) <= tol, f"seed {seed}: {what}"


def assert_same_on_every_rank(results, indices):
    for i in indices:
        assert all(torch.equal(r[i], results[0][i]) for r in results), f"output {i} differs between ranks"


TP_CASES = {  # world size, vocabulary blocks, case
    "2 ranks": (2, [50, 47], dict(batch=3, seq_len=11, vocab=97, dim=16, alpha=0.7, gamma=0.9, beta=0.1, bias=True,
                                  softcap=5.0)),
    "3 ranks": (3, [40, 31, 26], dict(batch=3, seq_len=9, vocab=97, dim=24, logit_scale=0.8, empty_row=True)),
    "3 ranks, bf16": (3, [33, 33, 31], dict(batch=2, seq_len=10, vocab=97, dim=32, bias=True, dtype=torch.bfloat16)),
}


@pytest.mark.parametrize("name", TP_CASES)
def test_vocab_parallel_reward_and_gradients(name):
    world, blocks, spec = TP_CASES[name]
    case = make_case(**spec)
    tol, grad_tol = (BF16_TOL, BF16_GRAD_TOL) if case.hidden.dtype == torch.bfloat16 else (TOL, TOL)
    expected = reward_step(case, *leaves(case))

    def rank_fn(rank, world):
        return twice(lambda: reward_step(case, *leaves(case, block=part(blocks, rank)), tp_group=dist.group.WORLD))

    results = ranks.run(world, rank_fn)
    assert_same_on_every_rank(results, [0, 1, 2])  # rewards, per-token rewards, hidden's gradient
    for rank, (rewards, per_token, d_hidden, d_weight, d_bias) in enumerate(results):
        assert rewards.dtype == per_token.dtype == torch.float32
        assert d_hidden.dtype == d_weight.dtype == case.hidden.dtype
        assert_close(rewards, expected[0], case.seed, "rewards", tol)
        assert_close(per_token, expected[1], case.seed, "per-token rewards", tol)
        assert torch.equal(per_token != 0, expected[1] != 0), f"seed {case.seed}: nonzeros only on responses"
        assert_close(d_hidden, expected[2], case.seed, "hidden's gradient (summed over the blocks)", grad_tol)
        assert_close(d_weight, expected[3][part(blocks, rank)], case.seed, "LM head's gradient, this block",
                     grad_tol)
        if d_bias is not None:
            assert_close(d_bias, expected[4][part(blocks, rank)], case.seed, "bias gradient, this block", grad_tol)


def statistics_step(case, hidden, weight, bias, targets, **groups):
    """token_statistics and log-probs with entropy, and the gradients of a loss made of all of them."""
    stats = token_statistics(hidden, weight, targets, alpha=0.8, bias=bias, softcap=4.0, **groups)
    logprobs, entropy = fused_token_logprobs(hidden, weight, case.ids, attention_mask=case.attention_mask,
                                             temperature=0.9, bias=bias, softcap=4.0, return_entropy=True, **groups)
    loss = stats.chosen_logit.sum() + stats.lse.sum() * 0.5 + logprobs.sum() - 0.3 * entropy.sum()
    loss.backward()
    return [stats.chosen_logit.detach(), stats.lse.detach(), logprobs.detach(), entropy.detach(), hidden.grad,
            weight.grad, bias.grad]


def test_vocab_parallel_statistics_logprobs_entropy():
    blocks = [40, 31, 26]
    case = make_case(batch=2, seq_len=7, vocab=97, dim=16, bias=True)
    targets = case.ids.clone()
    targets[0, :3] = -1  # no target: chosen logit 0
    expected = statistics_step(case, *leaves(case), targets)

    def rank_fn(rank, world):
        return twice(lambda: statistics_step(case, *leaves(case, block=part(blocks, rank)), targets,
                                             tp_group=dist.group.WORLD))

    results = ranks.run(3, rank_fn)
    assert_same_on_every_rank(results, range(5))
    names = ["chosen logit", "lse", "log-probs", "entropy", "hidden's gradient"]
    for rank, result in enumerate(results):
        for name, got, want in zip(names, result[:5], expected[:5]):
            assert_close(got, want, case.seed, name)
        assert not result[0][0, :3].any()
        assert_close(result[5], expected[5][part(blocks, rank)], case.seed, "LM head's gradient, this block")
        assert_close(result[6], expected[6][part(blocks, rank)], case.seed, "bias gradient, this block")


def test_dtensor_head_uses_its_mesh():
    case = make_case(batch=2, seq_len=8, vocab=97, dim=16, bias=True, softcap=6.0)
    expected = reward_step(case, *leaves(case))

    def rank_fn(rank, world):
        from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

        mesh = init_device_mesh("cpu", (world,))

        def step():
            hidden = case.hidden.clone().requires_grad_()
            weight, bias = (distribute_tensor(t.clone(), mesh, [Shard(0)]).requires_grad_()
                            for t in (case.weight, case.kwargs["bias"]))
            out = reward_step(case, hidden, weight, bias)  # no tp_group: the mesh's group
            return out[:3] + [out[3].to_local(), out[4].to_local()]

        return twice(step)

    results = ranks.run(2, rank_fn)
    blocks = [49, 48]  # how DTensor shards 97 rows on 2 ranks
    assert_same_on_every_rank(results, [0, 1, 2])
    for rank, result in enumerate(results):
        for got, want in zip(result[:3], expected[:3]):
            assert_close(got, want, case.seed, "rewards, per-token rewards, hidden's gradient")
        assert_close(result[3], expected[3][part(blocks, rank)], case.seed, "LM head's gradient, this shard")
        assert_close(result[4], expected[4][part(blocks, rank)], case.seed, "bias gradient, this shard")


CP_CASES = {
    2: [7, 4],
    3: [3, 0, 8],  # an empty chunk, and chunks that end inside responses
}


@pytest.mark.parametrize("world", CP_CASES)
def test_context_parallel_reward_and_gradients(world):
    chunks = CP_CASES[world]
    case = make_case(batch=4, seq_len=11, vocab=97, dim=16, alpha=1.3, gamma=0.8, beta=0.2, bias=True)
    expected = reward_step(case, *leaves(case))

    def rank_fn(rank, world):
        return twice(lambda: reward_step(case, *leaves(case, chunk=part(chunks, rank)), cp_group=dist.group.WORLD))

    results = ranks.run(world, rank_fn)
    assert_same_on_every_rank(results, [0, 1])
    for rank, (rewards, per_token, d_hidden, _, _) in enumerate(results):
        assert_close(rewards, expected[0], case.seed, "rewards")
        assert_close(per_token, expected[1], case.seed, "per-token rewards")
        if chunks[rank]:
            assert_close(d_hidden, expected[2][:, part(chunks, rank)], case.seed, "hidden's gradient, this chunk")
    # each rank's LM-head gradient is its chunk's share
    assert_close(sum(r[3] for r in results), expected[3], case.seed, "LM head's gradient, summed over chunks")
    assert_close(sum(r[4] for r in results), expected[4], case.seed, "bias gradient, summed over chunks")


def test_tp_by_cp_grid():
    blocks, chunks = [50, 47], [6, 5]
    case = make_case(batch=3, seq_len=11, vocab=97, dim=16, bias=True, softcap=5.0, beta=0.1)
    expected = reward_step(case, *leaves(case))

    def rank_fn(rank, world):
        # global rank = 2 * cp index + tp index: tp groups are grid rows, cp groups its columns
        rows = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        columns = [dist.new_group([0, 2]), dist.new_group([1, 3])]
        tp, cp = rank % 2, rank // 2
        return twice(lambda: reward_step(case, *leaves(case, block=part(blocks, tp), chunk=part(chunks, cp)),
                                         tp_group=rows[cp], cp_group=columns[tp]))

    results = ranks.run(4, rank_fn)
    assert_same_on_every_rank(results, [0, 1])
    for rank, (rewards, per_token, d_hidden, _, _) in enumerate(results):
        assert_close(rewards, expected[0], case.seed, "rewards")
        assert_close(per_token, expected[1], case.seed, "per-token rewards")
        assert_close(d_hidden, expected[2][:, part(chunks, rank // 2)], case.seed, "hidden's gradient, this chunk")
    for tp in range(2):
        column = [results[tp], results[2 + tp]]
        assert_close(sum(r[3] for r in column), expected[3][part(blocks, tp)], case.seed, "LM head's gradient")
        assert_close(sum(r[4] for r in column), expected[4][part(blocks, tp)], case.seed, "bias gradient")
