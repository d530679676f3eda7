"""endokernel on ``torch.distributed``: the same per-position statistics and finalizer, composed across ranks.

Tensor parallelism (``tp_group``, or a DTensor LM head) splits the vocabulary: each rank computes its block's
(chosen logit, logsumexp) with the ordinary op, and ``vocab_parallel.py`` merges the blocks. Context parallelism
(``cp_group``) splits positions: ``context_parallel.py`` runs the finalizer on each rank's chunk with global
positions and sums the chunks' rewards. Data-parallel scoring (``data_parallel.py``) shards pairs by tokens.
No kernel is touched here, only statistics of O(tokens) size; every reduction adds the ranks' values in rank order,
so every rank gets bitwise the same result. Only ``groups.py`` loads with the package (to recognise a DTensor
head); the rest loads when a process group or a DTensor is used.
"""
