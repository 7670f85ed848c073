"""swehero_kernels: GPU kernels for swehero training, each beside a plain PyTorch reference of the same function.

Imported as `swehero_kernels` (the `kernels/` folder of the repository); it imports nothing of `swehero`, so it can
be tested and benchmarked on its own.
"""

from .linear_ce import default_chunk_size, fused_linear_cross_entropy, unfused_linear_cross_entropy

__all__ = ["default_chunk_size", "fused_linear_cross_entropy", "unfused_linear_cross_entropy"]
