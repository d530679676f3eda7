"""``endokernel bench`` end to end on a tiny head (fresh processes, JSON, table, plot), and its argument errors."""

import json

import pytest
import torch

from endokernel.bench.command import add_arguments, settings_from_args
from endokernel.bench.methods import METHODS
from endokernel.cli import main


def test_runner_writes_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    main(["bench", "--device", "cpu", "--shapes", "32:1000", "--tokens", "64", "--dtypes", "float32",
          "--methods", "floor,torch,triton", "--repeats", "2", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| 64 | endokernel torch |" in out and "| 64 | floor: matmul, fastest tile dtype |" in out
    assert "triton at N=64 (needs a CUDA GPU)" in out

    (json_path,) = tmp_path.glob("*.json")
    document = json.loads(json_path.read_text())
    assert {"date", "git_commit", "torch", "triton", "device_name", "cpu_threads", "cpu_native_bf16"} <= set(
        document["environment"])
    rows = {row["method"]: row for row in document["results"]}
    assert rows["triton"]["status"] == "skipped"
    for name in ("floor", "torch"):
        row = rows[name]
        assert row["status"] == "ok" and row["tokens"] == 64 and row["dim"] == 32 and row["vocab"] == 1000
        assert len(row["times_s"]) == 2 and row["median_s"] > 0 and row["peak_extra_bytes"] >= 0
        assert row["tflops"] == pytest.approx(2 * 64 * 32 * 1000 / row["median_s"] / 1e12)
    assert rows["floor"]["ratio_to_floor"] == 1.0
    assert rows["torch"]["ratio_to_floor"] == pytest.approx(rows["torch"]["median_s"] / rows["floor"]["median_s"])
    assert list(tmp_path.glob("*-d32-v1000-float32.png"))


def test_skips_alternatives_predicted_too_slow_or_too_large_never_the_core(monkeypatch):
    from endokernel.bench import measure
    from endokernel.bench.shapes import Case, parse_head
    from endokernel.bench.sweep import _skip_reason

    settings = _settings(["--device", "cpu", "--max-call-seconds", "10", "--loop-max-tokens", "512"])
    case = Case(parse_head("qwen3-4b"), torch.float32, 2048)
    history = {("qwen3-4b", "float32", name): (512, 3.0) for name in ("floor", "naive", "loop")}
    assert "~12 s per call predicted from N=512 > --max-call-seconds 10" in _skip_reason(
        METHODS["naive"], case, settings, history)
    assert _skip_reason(METHODS["floor"], case, settings, history) is None
    assert _skip_reason(METHODS["loop"], case, settings, history) == "N > --loop-max-tokens 512"
    monkeypatch.setattr(measure, "available_memory", lambda: 2**30)
    assert "GiB available" in _skip_reason(METHODS["compile"], case, settings, history)


def _settings(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(argv))


@pytest.mark.parametrize("argv, option", [
    (["--tokens", "0"], "--tokens"),
    (["--tokens", "1k"], "--tokens"),
    (["--shapes", "qwen9"], "--shapes"),
    (["--shapes", "32:0"], "--shapes"),
    (["--dtypes", "int8"], "--dtypes"),
    (["--methods", "fast"], "--methods"),
    (["--repeats", "0"], "--repeats"),
    (["--time-budget", "0"], "--time-budget"),
    (["--device", "tpu"], "--device"),
])
def test_bad_options_name_the_option(argv, option):
    with pytest.raises(ValueError, match=option):
        _settings(["--device", "cpu", *argv] if "--device" not in argv else argv)


def test_method_groups_split_forward_and_backward():
    forward = _settings(["--device", "cpu"]).methods
    backward = _settings(["--device", "cpu", "--methods", "backward"]).methods
    assert "torch" in forward and not any(METHODS[name].backward for name in forward)
    assert "floor" in backward and "torch+bwd" in backward and "torch" not in backward


def test_quick_and_explicit_options_combine():
    settings = _settings(["--device", "cpu", "--quick", "--tokens", "256"])
    assert settings.tokens == (256,) and [h.name for h in settings.heads] == ["qwen3-4b"]
    assert settings.repeats == 2


def test_presets_set_the_options_and_given_options_win():
    settings = _settings(["--preset", "cpp-forward"])
    assert settings.device.type == "cpu" and settings.tokens == (256, 1024, 2048)
    assert settings.methods == ("floor", "torch", "cpp") and [h.name for h in settings.heads] == ["d1024-v151936"]
    backward = _settings(["--preset", "cpp-backward", "--tokens", "64", "--repeats", "1"])
    assert backward.tokens == (64,) and backward.repeats == 1 and "cpp+bwd" in backward.methods
    with pytest.raises(SystemExit):
        _settings(["--preset", "no-such-preset"])


def test_cli_reports_bad_options_without_a_traceback():
    with pytest.raises(SystemExit, match="--tokens"):
        main(["bench", "--device", "cpu", "--tokens", "-3"])


def test_plots_are_skipped_with_a_notice_without_matplotlib(tmp_path, monkeypatch, capsys):
    import sys

    from endokernel.bench import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert plots.write([], tmp_path, "stem") == []
    assert "matplotlib is not installed" in capsys.readouterr().out


def test_plots_draw_methods_whose_memory_did_not_grow(tmp_path):
    pytest.importorskip("matplotlib")
    from endokernel.bench import plots
    from endokernel.bench.sweep import Result

    rows = [Result("h", 8, 100, None, "float32", n, "floor", "floor", "ok", times_s=[0.1], median_s=0.1 * n,
                   peak_extra_bytes=0) for n in (64, 128)]
    (path,) = plots.write(rows, tmp_path, "stem")
    assert path.name == "stem-h-float32.png" and path.stat().st_size > 0
