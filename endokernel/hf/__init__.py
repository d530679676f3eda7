"""Hugging Face integration: ``EndogenousRewardModel`` (model.py) and the RM-Bench evaluation (rmbench.py).

Built on the core's public API only. Nothing here is imported by ``import endokernel``: transformers loads
when ``endokernel.EndogenousRewardModel`` is first used."""
