"""Rollouts: the agent run over task sets. Task loading and selection, one attempt per child process under a time
limit, workers over teacher endpoints with failover, append-only logs that make every run resumable, and the local
grader that labels an attempt resolved or not. Evaluation and distillation both run on this layer."""
