"""``endokernel demo`` end to end on a tiny shape: both methods run, report, and their rewards agree; and its
argument errors."""

import pytest
import torch

from endokernel import demo
from endokernel.cli import main


def printed_rows(out: str) -> dict[str, list[str]]:
    """The demo's table rows by method: backend, time (s), peak extra memory (MiB), reward."""
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] in demo.METHODS and len(fields) == 5:
            rows[fields[0]] = fields[1:]
    return rows


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_demo_scores_both_ways_and_the_rewards_agree(capsys, dtype, tolerance):
    main(["demo", "--tokens", "64", "--dim", "24", "--vocab", "1001", "--device", "cpu", "--dtype", dtype])
    out = capsys.readouterr().out
    rows = printed_rows(out)
    assert rows["endokernel"][0] == "auto" and rows["naive"][0] == "reference"
    fused, naive = float(rows["endokernel"][3]), float(rows["naive"][3])
    assert abs(fused - naive) <= tolerance * abs(naive) + 1e-4  # printed with 4 decimals
    assert f"{dtype} on CPU" in out and "rewards differ by" in out


def test_default_dtype_follows_the_hardware():
    assert demo.default_dtype(torch.device("cuda")) == torch.bfloat16
    assert demo.default_dtype(torch.device("cpu")) in (torch.bfloat16, torch.float32)


@pytest.mark.parametrize("argv", [["demo", "--methods", "fast"], ["demo", "--tokens", "0"], ["nothing"]])
def test_demo_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        main(argv)
