"""The compile report, CI's stand-in for a GPU: every Triton kernel the package launches, in its default
configuration, compiled ahead of time for sm_80, sm_90a, sm_100 and gfx942 (bf16, fp16, fp32; no flags and
all of bias, logit scale, softcap, entropy), through ``endokernel kernels``. It fails on a compile error, a
spill, shared memory over the target's limit, a bf16 sm_90a forward or backward kernel without wgmma, or a
gfx942 forward kernel without MFMA. About two minutes on two cores: the compiles run in parallel worker
processes with an empty Triton cache. Also the Triton IR of transposed inputs: 64-bit offsets."""

import json
import re

from endokernel.backends.triton.report import TARGETS, compile_report, problems
from endokernel.cli import main

KERNELS = {"partial_stats_kernel": "forward", "grad_logits_kernel": "backward", "combine_splits_kernel": "other",
           "finalize_kernel": "other"}
FIELDS = {"kernel", "role", "target", "dtype", "config", "default", "registers", "spill_bytes", "shared_bytes",
          "mma", "tma", "gemm_by_library", "dump"}


def test_default_configs_compile_without_spills_for_every_target(tmp_path, capsys):
    out, dump = tmp_path / "report.json", tmp_path / "dump"
    try:
        main(["kernels", "--defaults-only", "--json", str(out), "--dump", str(dump)])
    except SystemExit:
        raise AssertionError(capsys.readouterr().err) from None
    rows = json.loads(out.read_text())
    assert problems(rows) == []
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["kernel", "target", "dtype"] and len(table.splitlines()) > len(rows)

    assert {(row["target"], row["kernel"]) for row in rows} == {(t, k) for t in TARGETS for k in KERNELS}
    for row in rows:
        assert FIELDS <= row.keys() and row["default"] and row["role"] == KERNELS[row["kernel"]]
        assert row["gemm_by_library"] == (row["kernel"] == "grad_logits_kernel")
        text = open(row["dump"]).read()
        if row["target"] == "gfx942":
            assert row["dump"].endswith(".amdgcn") and ".vgpr_count" in text
        else:
            assert row["dump"].endswith(".ptx") and ".entry " + row["kernel"] in text
        if row["role"] == "other":
            continue
        matrix = row["mma"]
        if row["target"] == "sm_90a" and row["dtype"] != "fp32":
            assert matrix["wgmma"] and row["tma"] and "wgmma.mma_async" in text
        if row["target"] == "sm_100" and row["dtype"] != "fp32":
            assert matrix["tcgen05"] and row["tma"]
        if row["target"] == "sm_80" and row["dtype"] != "fp32":
            assert matrix["mma_sync"] and not row["tma"]
        if row["target"] == "gfx942":
            assert matrix["v_mfma"] and "v_mfma" in text
    # the forward with positions that are not one range of hidden's rows: the head through TMA, hidden by pointers
    assert any(row["rows"] == "gathered" and row["tma"] for row in rows if row["target"] == "sm_90a")


def test_bad_options_name_the_option():
    for argv, message in ((["--dtypes", "bf17"], "--dtypes"), (["--targets", "sm_7"], "--targets"),
                          (["--flags", "tanh"], "--flags"), (["--dim", "0"], "--dim")):
        try:
            main(["kernels", *argv])
        except SystemExit as error:
            assert message in str(error.code), (argv, error.code)
        else:
            raise AssertionError(f"{argv} was accepted")


def test_transposed_inputs_take_64_bit_offsets(tmp_path):
    """Column-major hidden and head (strides (1, N + 1) and (1, V)) at D = 16384, V = 151936: (D - 1) * V
    passes 2**31, so the statistics, G and merge kernels multiply offsets by strides in 64 bits; their Triton IR
    (sm_80: pointer loads) has i64 products of tensors and no i32 one. (Scalar i32 products are tile indices.)"""
    shape = dict(tokens=4096, dim=16384, vocab=151936)
    assert (shape["dim"] - 1) * shape["vocab"] >= 2**31
    rows = compile_report(("sm_80",), ("bf16",), ("all",), candidates=False, dump_dir=tmp_path, shape=shape,
                          layout="column-major")
    kernels = {"partial_stats_kernel", "grad_logits_kernel", "combine_splits_kernel"}
    assert kernels <= {row["kernel"] for row in rows}
    for row in rows:
        assert row["error"] is None and row["layout"] == "column-major", row
        if row["kernel"] not in kernels:
            continue
        products = re.findall(r"arith\.muli [^:]*: (tensor<[^>]*>)", open(row["dump_ttir"]).read())
        narrow = [kind for kind in products if not kind.endswith("xi64>")]
        assert not narrow, f"{row['kernel']}: offset products {narrow} are not 64-bit"
        assert products, f"{row['kernel']}: no offset products seen"
