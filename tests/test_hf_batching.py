"""Length bucketing and right padding."""

import pytest
import torch

from endokernel.hf.batching import DEFAULT_MAX_TOKENS, length_buckets, pad_right, prompt_groups

LENGTHS = [5, 40, 12, 40, 3, 90, 7, 25, 25, 1]


def padded_size(batch, lengths):
    return len(batch) * max(lengths[i] for i in batch)


@pytest.mark.parametrize("batch_size, max_tokens", [(None, 100), (3, None), (2, 60), (None, 10**6), (1, None)])
def test_buckets_cover_every_row_once_longest_first_within_limits(batch_size, max_tokens):
    batches = length_buckets(LENGTHS, batch_size=batch_size, max_tokens=max_tokens)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS, reverse=True)
    for batch in batches:
        if batch_size is not None:
            assert len(batch) <= batch_size
        if max_tokens is not None and len(batch) > 1:
            assert padded_size(batch, LENGTHS) <= max_tokens


def test_buckets_fill_up_to_the_budget():
    # budget 100: 90 alone, then 40 + 40 (80), then 25, 25, 12, 7 (4 rows x 25 = 100), then 5, 3, 1
    assert length_buckets(LENGTHS, max_tokens=100) == [[5], [1, 3], [7, 8, 2, 6], [0, 4, 9]]


def test_row_longer_than_the_budget_gets_its_own_batch():
    assert length_buckets([500, 10, 10], max_tokens=100) == [[0], [1, 2]]


def test_default_budget_applies_without_limits():
    lengths = [DEFAULT_MAX_TOKENS // 4] * 9
    assert [len(b) for b in length_buckets(lengths)] == [4, 4, 1]
    assert length_buckets([]) == []


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"max_tokens": -5}, {"batch_size": 2.5}, {"max_tokens": True}])
def test_bad_limits_raise(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        length_buckets(LENGTHS, **kwargs)


def test_pad_right():
    ids, mask = pad_right([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert ids.dtype == mask.dtype == torch.int64


def test_padding_bound_closes_batches_of_very_different_lengths():
    lengths = [100, 90, 40, 38, 10]
    # within the token budget all five would fit; at most a quarter of padding splits them by length
    assert length_buckets(lengths, max_tokens=10**6) == [[0, 1, 2, 3, 4]]
    batches = length_buckets(lengths, max_tokens=10**6, max_padding=0.25)
    assert batches == [[0, 1, 2], [3], [4]]  # 100, 90, 40: 23% padding; a fourth row would make it 33%
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert 1 - sum(lengths[i] for i in batch) / padded <= 0.25


def test_prompt_groups_split_shared_prompts_from_the_rest():
    rows = [([1, 5, 6, 7], 2), ([1, 5, 8], 2), ([1, 9, 9], 2), ([1, 5], 2), ([2, 3, 4], 1), ([1, 9, 4], 3)]
    groups, alone = prompt_groups(rows, range(len(rows)))
    assert groups == [[0, 1, 3]]  # prompt [1, 5]; [1, 9] is a prompt once, [1, 9, 4] is another prompt
    assert alone == [2, 4, 5]
    groups, alone = prompt_groups(rows, [1, 2, 4])  # only the rows asked about
    assert groups == [] and alone == [1, 2, 4]
