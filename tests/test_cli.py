"""``endokernel demo`` end to end on a tiny shape, and its argument errors."""

import pytest

from endokernel.cli import main


def test_demo_prints_both_methods(capsys):
    main(["demo", "--tokens", "64", "--dim", "24", "--vocab", "1001", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "endokernel" in out and "naive" in out and "rewards differ by" in out


@pytest.mark.parametrize("argv", [["demo", "--methods", "fast"], ["demo", "--tokens", "0"], ["nothing"]])
def test_demo_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        main(argv)
