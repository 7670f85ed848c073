"""The settings every test that serves the tiny model with vLLM uses."""

from swehero.serve.server import ServeConfig


def tiny_serve_config(model_dir, port: int = 0) -> ServeConfig:
    # 16k context: the OpenHands tool schemas alone are ~4.3k tokens with the tiny 2k-word vocabulary
    return ServeConfig(model=str(model_dir), served_name="tiny", dtype="float32", max_model_len=16384,
                       gpu_memory_utilization=0.2, port=port, compile=False)
