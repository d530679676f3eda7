"""The core imports without transformers and never imports the integration; the command modules and
``endokernel.rl`` import without it too (the CLI imports every command), and ``EndogenousRewardModel`` and
``EndogenousRewardFunction`` load it on demand."""

import pathlib
import subprocess
import sys

import pytest

WITHOUT_TRANSFORMERS = """
import importlib, sys
sys.modules["transformers"] = None  # as if not installed: importing it raises ImportError
import endokernel
assert callable(endokernel.fused_endogenous_reward)
assert not any(name.startswith("endokernel.hf") for name in sys.modules), "the core imported the integration"
for name in ("endokernel.hf.rmbench", "endokernel.hf.score_cli", "endokernel.rl", "endokernel.cli"):
    importlib.import_module(name)
assert "endokernel.hf.model" not in sys.modules
try:
    endokernel.EndogenousRewardModel
except ImportError as error:
    print("ImportError:", error)
try:
    importlib.import_module("endokernel.rl").EndogenousRewardFunction("some/model")
except ImportError as error:
    print("ImportError:", error)
"""


def test_core_imports_without_transformers():
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRANSFORMERS], capture_output=True, text=True,
                          timeout=120, cwd=pathlib.Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ImportError:") == 2 and "transformers" in done.stdout


def test_lazy_export_and_unknown_names():
    import endokernel
    from endokernel.hf.model import EndogenousRewardModel

    assert endokernel.EndogenousRewardModel is EndogenousRewardModel
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = endokernel.NoSuchThing
