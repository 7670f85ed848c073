"""Supervised fine-tuning with Megatron-Core on packed trajectories (SWE-Zero, then SWE-Hero)."""
