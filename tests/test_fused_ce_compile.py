"""The fused cross-entropy's Triton kernels compile for Hopper (sm_90a) to tensor-core (wgmma) code, without a GPU.

test_fused_ce.py runs the kernels in Triton's interpreter, which executes their Python and never meets Triton's
compiler, so a kernel could pass there and fail to compile for a GPU. Here each kernel is compiled ahead of time
with Triton's bundled ptxas, with the argument specialisation a real launch gets (unit strides, 16-divisible sizes).
It runs in a fresh interpreter because test_fused_ce.py puts Triton in interpreter mode for this process.
"""

import os
import subprocess
import sys

import pytest

P16, P32, I64 = "*bf16", "*fp32", "*i64"


def _compile(kernel, pointer_types: dict, constants: dict, divisible: list, num_warps: int, num_stages: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    signature = {n: "constexpr" if n in constants else pointer_types.get(n, "i32") for n in names}
    source = ASTSource(
        fn=kernel,
        signature=signature,
        constexprs={(names.index(n),): v for n, v in constants.items()},
        attrs={(names.index(n),): [["tt.divisibility", 16]] for n in divisible},
    )
    options = {"num_warps": num_warps, "num_stages": num_stages}
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]


def compile_for_hopper() -> None:
    from swehero_kernels import triton_ops

    config = triton_ops._CONFIGS[0]
    tiles, warps, stages = config.kwargs, config.num_warps, config.num_stages
    stats = _compile(
        triton_ops._logits_stats_kernel.fn,  # .fn: the jitted function under the autotuner
        dict(h_ptr=P16, w_ptr=P16, logits_ptr=P16, targets_ptr=I64, part_max_ptr=P32, part_sum_ptr=P32,
             target_logit_ptr=P32),
        {**tiles, "stride_hk": 1, "stride_wk": 1},
        ["h_ptr", "w_ptr", "logits_ptr", "K", "N", "stride_hm", "stride_wn", "stride_lm"], warps, stages,
    )
    grad_weight = _compile(  # grad_weight (fp32) += grad_logits.T @ hidden
        triton_ops._matmul_kernel, dict(a_ptr=P16, b_ptr=P16, c_ptr=P32),
        {**tiles, "ACCUMULATE": True, "stride_am": 1, "stride_bn": 1, "stride_cn": 1},
        ["a_ptr", "b_ptr", "c_ptr", "N", "stride_ak", "stride_bk", "stride_cm"], warps, stages,
    )
    grad_hidden = _compile(  # grad_hidden = grad_logits @ weight
        triton_ops._matmul_kernel, dict(a_ptr=P16, b_ptr=P16, c_ptr=P16),
        {**tiles, "ACCUMULATE": False, "stride_ak": 1, "stride_bn": 1, "stride_cn": 1},
        ["a_ptr", "b_ptr", "c_ptr", "N", "stride_am", "stride_bk", "stride_cm"], warps, stages,
    )
    _compile(
        triton_ops._logits_to_grad_kernel, dict(logits_ptr=P16, lse_ptr=P32, targets_ptr=I64, scale_ptr=P32),
        {"BLOCK": triton_ops._ELEMENTWISE_BLOCK}, ["logits_ptr", "stride_lm"], 4, 1,
    )
    for name, ptx in [("logits_stats", stats), ("grad_weight", grad_weight), ("grad_hidden", grad_hidden)]:
        assert "wgmma" in ptx, f"{name} does not use Hopper tensor cores"


@pytest.mark.slow
def test_kernels_compile_for_hopper():
    pytest.importorskip("triton.backends.nvidia.compiler", reason="triton's CUDA backend is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # triton 3.9's default, stated to silence its warning
    result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


if __name__ == "__main__":
    compile_for_hopper()
