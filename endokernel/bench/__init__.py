"""The benchmark suite behind ``endokernel bench``: every method that computes the per-token statistics
(chosen logit and logsumexp), timed against the bare matmul floor, with peak memory.

``shapes`` names the LM heads, ``methods`` is the one method registry, ``inputs`` builds the inputs,
``measure`` times one method (fresh processes on CPU, ``do_bench`` on GPU), ``sweep`` runs the grid,
``report`` and ``plots`` turn the results into a table, JSON and PNGs, and ``command`` is the CLI.
"""
