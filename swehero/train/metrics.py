"""What a training run reports: JSONL metrics (the record), TensorBoard, optional Weights & Biases, a tqdm
bar with loss, lr, tokens/s and MFU, and a loss/lr plot at the end. Only the reporting rank creates one."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from swehero.jsonio import JsonlLog
from swehero.train.memory import dims, layer_matmul_weights

# Dense bf16 peak of one H100 SXM; FP8 doubles it for the matrix multiplies Transformer Engine runs in FP8.
H100_BF16_PEAK_FLOPS = 989e12
FP8_SPEEDUP = 2.0


@dataclass(frozen=True)
class TrainingFlops:
    """Forward + backward FLOPs per trained token, split by what runs them: under `precision: fp8` only the linear
    layers' matrix multiplies run in FP8 (Megatron's `hybrid` recipe); core attention stays bf16."""

    linear: float
    """Matrix multiplies of the weights (the layers' projections and the LM head)."""
    attention: float
    """Attention scores and their weighted sum over the values."""

    @property
    def total(self) -> float:
        return self.linear + self.attention

    def seconds_at_peak(self, precision: str) -> float:
        """GPU-seconds these FLOPs take at the H100's peak: the linear part at FP8's under `fp8`, attention at
        bf16's. MFU is this time over the time taken: the FLOPs against the effective peak of their mix (the bf16
        peak itself in bf16)."""
        linear_peak = H100_BF16_PEAK_FLOPS * (FP8_SPEEDUP if precision == "fp8" else 1)
        return self.linear / linear_peak + self.attention / H100_BF16_PEAK_FLOPS


def training_flops_per_token(hf_config: dict, doc_lengths: list[int]) -> TrainingFlops:
    """Forward + backward FLOPs per trained token of a Qwen2-style decoder, attention counted exactly for
    causal attention within each packed document (a token at position p attends to p + 1 keys).

    Matrix multiplies cost 2 FLOPs per weight per token forward, 3x that with the backward: 6 x the
    parameters that multiply activations (all but the input embedding). Attention scores and the weighted sum
    add 4 x hidden x keys per layer forward, 12 x ... for training.
    """
    h, heads, _, head_dim, _ = dims(hf_config)
    layers = hf_config["num_hidden_layers"]
    matmul_params = layers * layer_matmul_weights(hf_config) + h * hf_config["vocab_size"]  # + the LM head
    tokens = sum(doc_lengths)
    mean_keys = sum(n * (n + 1) / 2 for n in doc_lengths) / max(tokens, 1)
    return TrainingFlops(linear=6.0 * matmul_params, attention=12.0 * layers * heads * head_dim * mean_keys)


# Per-step rates (work over the step's seconds): over a log interval they are its work over its time.
RATES = ("tokens_per_s", "tflops_per_gpu", "mfu")


@dataclass
class LogInterval:
    """The training steps since the last log record, reduced to one record as Megatron-LM's `training_log` reduces
    its log interval: the loss is the mean of the steps' losses, every step counting once (each is already the mean
    over its own global batch's trained tokens), the rates are the interval's work over its time, and the rest
    (learning rate, gradient norm) is the last step's, as Megatron-LM logs them."""

    steps: list[tuple[dict, float]] = field(default_factory=list)
    """(metrics, seconds) of each step."""

    def add(self, metrics: dict, seconds: float) -> None:
        self.steps.append((metrics, seconds))

    def pop(self) -> dict:
        """The record of the interval; the next one starts empty."""
        record = {**self.steps[-1][0], "loss": sum(m["loss"] for m, _ in self.steps) / len(self.steps)}
        seconds = sum(t for _, t in self.steps)
        record.update({key: sum(m[key] * t for m, t in self.steps) / seconds for key in RATES if key in record})
        self.steps = []
        return record


class MetricsLogger:
    def __init__(self, folder: Path, total_steps: int, start_step: int, tensorboard: bool, wandb_project: str,
                 run_name: str, config: dict) -> None:
        from tqdm import tqdm

        self.folder = Path(folder)
        # A run killed mid-write (a full disk, a node lost) left a torn last line, which appending would glue to the
        # next record, and every later run would fail reading the metrics at its end: opening the log cuts it.
        JsonlLog(self.folder / "metrics.jsonl")
        self.jsonl = open(self.folder / "metrics.jsonl", "a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # A resumed run logs again the steps after its checkpoint: their events from before the resume are
            # dropped, those of the checkpoint's own step (not trained again) kept. metrics.jsonl keeps both, and
            # read_metrics takes the later one.
            self.tb = SummaryWriter(str(self.folder / "tensorboard"), purge_step=start_step + 1)
        self.wandb = None
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, name=run_name, config=config, dir=self.folder,
                                    id=wandb_run_id(self.folder, start_step), resume="allow")
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict) -> None:
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for key, value in metrics.items():
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        shown = {k: metrics[k] for k in ("loss", "lr", "tokens_per_s", "mfu") if k in metrics}
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        plot_curves(self.folder / "metrics.jsonl", self.folder / "loss.png")


def wandb_run_id(folder: Path, start_step: int) -> str:
    """The Weights & Biases run a training logs to: the one it logged to before when it resumes from a checkpoint
    (a requeued job goes on in the same run), a new one when it starts from step 0."""
    saved = folder / "wandb_run_id"
    if start_step > 0 and saved.is_file():
        return saved.read_text().strip()
    run_id = uuid.uuid4().hex[:16]
    saved.write_text(run_id + "\n")
    return run_id


def read_metrics(path: Path) -> list[dict]:
    """The metrics of a run, the last record winning for a step that was logged twice (a resumed run)."""
    by_step: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        by_step[record["step"]] = {**by_step.get(record["step"], {}), **record}
    return [by_step[s] for s in sorted(by_step)]


def plot_curves(metrics_file: Path, out: Path) -> None:
    from swehero.plots import figure

    records = read_metrics(metrics_file)
    train = [r for r in records if "loss" in r]
    valid = [r for r in records if "valid_loss" in r]
    with figure(out, 1, 2, figsize=(11, 4)) as (ax_loss, ax_lr):
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
        if valid:
            ax_loss.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="validation")
        ax_loss.set(xlabel="step", ylabel="loss (per trained token)", title="loss")
        ax_loss.legend()
        ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train])
        ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
