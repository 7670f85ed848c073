"""vLLM tool-parser plugin `swehero_hermes`: vLLM's hermes parser with JSON-aware block splitting.

Loaded by the server with `--tool-parser-plugin <this file> --tool-call-parser swehero_hermes` (which
`swehero serve` passes). It changes how a finished reply is read (see `swehero.toolcalls`, which the importers and
the agent use too): every call the template can write comes back, and the content comes back without the newline
the template puts before the first call, so the reply renders back to the text the model wrote. Streaming and ids
stay vLLM's own: streamed content deltas still carry that newline.
"""

from __future__ import annotations

import json

from vllm.entrypoints.generate.base.protocol import ExtractedToolCallInformation, FunctionCall, ToolCall
from vllm.tool_parsers.abstract_tool_parser import ToolParserManager
from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

from swehero import toolcalls

NAME = "swehero_hermes"


@ToolParserManager.register_module(NAME)
class JsonAwareHermesToolParser(Hermes2ProToolParser):
    def extract_tool_calls(self, model_output, request) -> ExtractedToolCallInformation:
        try:
            content, calls = toolcalls.parse(model_output)
        except toolcalls.MalformedToolCall:
            # Same outcome as vLLM's parser on a broken call: no tool call, the text comes back as content.
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)
        if not calls:
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)
        tool_calls = [
            ToolCall(type="function", function=FunctionCall(
                name=call["name"], arguments=json.dumps(call["arguments"], ensure_ascii=False)))
            for call in calls
        ]
        return ExtractedToolCallInformation(tools_called=True, tool_calls=tool_calls, content=content or None)

    def _extract_tool_call_jsons(self, text: str) -> list[tuple[str, bool]]:
        """(json_text, is_complete) per block, for vLLM's streaming diff logic."""
        try:
            blocks = toolcalls.regions(text)
        except toolcalls.MalformedToolCall:
            return []
        return [(block.body, block.call is not None) for block in blocks]
