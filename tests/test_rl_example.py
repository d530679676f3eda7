"""examples/grpo_endogenous.py runs as a user would run it: two GRPO optimizer steps with TRL on a CPU, offline,
rewarded by the frozen initial policy's endogenous reward, writing nothing outside its temporary folder."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.slow
def test_grpo_example_runs_two_steps_offline(tmp_path):
    pytest.importorskip("trl")  # a test extra, installed in CI: this guard is for other machines
    temp, hf_home, cwd = tmp_path / "tmp", tmp_path / "hf_home", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp), "HF_HOME": str(hf_home),
           "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "grpo_endogenous.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-4000:]
    steps = [line for line in done.stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and "endogenous reward mean" in steps[0], done.stdout
    assert "2 GRPO steps done" in done.stdout
    # importing TRL's GRPOTrainer makes torch inductor's (empty) cache folder in the system temp folder
    left = [path for path in temp.iterdir() if not (path.name.startswith("torchinductor_") and not any(path.iterdir()))]
    assert left == [] and not any(cwd.iterdir()) and not hf_home.exists()
    print(f"example: {seconds:.1f} s")
