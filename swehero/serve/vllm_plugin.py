"""vLLM tool-parser plugin `swehero_hermes`: vLLM's hermes parser with JSON-aware block splitting.

Loaded by the server with `--tool-parser-plugin <this file> --tool-call-parser swehero_hermes` (which
`swehero serve` passes). It changes how a reply is read (see `swehero.toolcalls`, which the importers and the
agent use too): every call the template can write comes back, text before a call may name `<tool_call>`, and the
content of a finished reply comes back without the newline the template puts before the first call, so the reply
renders back to the text the model wrote. Streamed, a call is sent whole once its body is complete, as the
finished reply reads it (nothing of a body that cannot become a call); ids and the content deltas stay vLLM's own
(they still carry that newline).
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
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sent_calls: list[str] = []
        """The calls streamed so far (one parser streams one reply)."""

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
                name=call["name"], arguments=toolcalls.arguments_json(call["arguments"])))
            for call in calls
        ]
        return ExtractedToolCallInformation(tools_called=True, tool_calls=tool_calls, content=content or None)

    def _extract_content(self, current_text: str) -> str | None:
        """Unsent text that is content whatever follows (a `<tool_call>` that opens no call included); none once a
        call was sent, even if text after it then breaks that call (as `... oops </tool_call>` does)."""
        end = toolcalls.streamed(current_text).content_end
        if self.prev_tool_call_arr or end <= self._sent_content_idx:
            return None
        content = current_text[self._sent_content_idx:end]
        self._sent_content_idx = end
        return content

    def _extract_tool_call_jsons(self, text: str) -> list[tuple[str, bool]]:
        """(json_text, is_complete) per complete call, for vLLM's streaming diff logic: written as the finished
        reply's calls are, so the streamed arguments are theirs byte for byte. A call sent stays sent: text that
        then makes its block no call (text where its `</tool_call>` belongs) stops the calls there, as a broken one
        does; else the calls after it would move onto its index, and vLLM would send their arguments
        as the rest of its own."""
        found = [f'{{"name": {json.dumps(call["name"], ensure_ascii=False)}, '
                 f'"arguments": {toolcalls.arguments_json(call["arguments"])}}}'
                 for call in toolcalls.streamed(text).calls]
        if found[:len(self._sent_calls)] != self._sent_calls:
            found = self._sent_calls
        self._sent_calls = found
        return [(call, True) for call in found]
