"""Hugging Face integration: ``EndogenousRewardModel`` (model.py), the RM-Bench evaluation (rmbench.py) and
``endokernel score`` (score_cli.py); ``endokernel.rl`` builds the RL reward function on them.

Built on the core's public API only. Nothing here is imported by ``import endokernel``: transformers loads
when ``endokernel.EndogenousRewardModel`` is first used."""
