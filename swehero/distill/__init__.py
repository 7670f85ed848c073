"""Distillation: teacher rollouts on training tasks, the paper's trajectory filters, decontamination."""
