"""Teacher-forced accuracy: how often a checkpoint's most likely next token is the reference token, over the
assistant tokens of trajectories it was not trained on.

It measures what SFT teaches (the tool-call format, the scaffold's habits, copying names from observations)
without sampling noise, so it moves long before the resolved rate does. The tokens counted are exactly the ones
training puts loss on: the data plane renders and masks each trajectory (`swehero.data.render.ChatRenderer`).
"""

from __future__ import annotations

from pathlib import Path


def teacher_forced_accuracy(model_dir: str, trajectory_files: list[str], max_tokens: int = 32768) -> dict:
    """{"trajectories", "tokens", "correct", "accuracy"} of the Hugging Face checkpoint in `model_dir`; each
    trajectory is cut to its first `max_tokens` tokens (the checkpoint's context)."""
    import torch
    from transformers import AutoModelForCausalLM

    from swehero.data.render import ChatRenderer, load_tokenizer
    from swehero.data.trajectory import validate
    from swehero.jsonio import read_jsonl

    device = "cuda" if torch.cuda.is_available() else "cpu"
    renderer = ChatRenderer(load_tokenizer(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
    trajectories = tokens = correct = 0
    try:
        for path in trajectory_files:
            for record in read_jsonl(Path(path)):
                rendered = renderer.render(validate(record))
                ids = torch.as_tensor(rendered.input_ids[:max_tokens], dtype=torch.long, device=device)
                # Position t predicts token t + 1: score the predictions of the trained tokens.
                trained = torch.as_tensor(rendered.loss_mask[1:max_tokens], dtype=torch.bool, device=device)
                predicted = _most_likely_next(model, ids)
                trajectories += 1
                tokens += int(trained.sum())
                correct += int((predicted == ids[1:])[trained].sum())
    finally:
        # The server started next (the verifier's, the next eval stage's) is another process: the memory this
        # one's allocator keeps cached would be missing from the GPU it counts on.
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"trajectories": trajectories, "tokens": tokens, "correct": correct,
            "accuracy": correct / tokens if tokens else None}


def _most_likely_next(model, ids, rows: int = 4096):
    """The most likely next token after each position but the last. The output layer runs on `rows` positions at a
    time: all 128k positions' logits at once are 37 GiB in bf16 for Qwen2.5's vocabulary."""
    import torch

    with torch.inference_mode():
        hidden = model.base_model(ids[None]).last_hidden_state[0, :-1]
        head = model.get_output_embeddings()
        return torch.cat([head(part).argmax(-1) for part in hidden.split(rows)])
