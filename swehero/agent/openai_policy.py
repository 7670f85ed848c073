"""The `openai` policy: any OpenAI-compatible chat-completions server (vLLM, teacher APIs) with function calling.

Tool calls normally arrive parsed (vLLM's hermes parser for Qwen2.5, qwen3_coder for Qwen3-Coder). When a server
returns them as text instead, they are read from the content by `swehero.toolcalls`: hermes-style JSON bodies and
`<function=...><parameter=...>` markup. Plain stdlib HTTP: nothing to install.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from swehero import toolcalls
from swehero.agent.policy import ContextLimit, EndpointRefused, PolicyError, Reply
from swehero.recipe.stage import Range


@dataclass(frozen=True)
class OpenAIConfig:
    """Endpoint and sampling settings (defaults: the paper's evaluation, temperature 0.7, top-p 0.8, top-k 20)."""

    base_url: str = ""
    """The server's OpenAI API root (`http://host:port/v1`); empty in a stage: its `endpoints`, or the server it
    starts for `serve`."""
    model: str = ""
    """Model name the server knows; empty asks `/models` and uses the first one."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (vLLM needs none)."""
    temperature: Annotated[float, Range(min=0, max=2)] = 0.7
    """Sampling temperature (the paper's evaluation: 0.7); 0 is greedy, 2 the most OpenAI and vLLM accept."""
    top_p: Annotated[float, Range(gt=0, max=1)] = 0.8
    """Nucleus sampling's probability mass (the paper: 0.8)."""
    top_k: Annotated[int, Range(min=-1)] = 20
    """Top-k sampling (the paper: 20), sent as vLLM's `top_k` extension; -1 leaves it out (for servers that reject
    it)."""
    seed: int | None = None
    """Sampling seed sent with every request (vLLM's per-request seed); eval and distill give each attempt its
    own, so runs are reproducible; None: the server's choice."""
    max_reply_tokens: Annotated[int | None, Range(min=1)] = None
    """Tokens per model reply (the request's `max_tokens`); None sends none, so a reply may run to the end of the
    context: what OpenHands 0.54 sends for a model LiteLLM has no card of (a vLLM-served checkpoint, the teacher
    behind an OpenAI-compatible server), so that a long `create` is not cut into a reply without a call."""
    request_timeout: Annotated[float, Range(gt=0)] = 600.0
    """Seconds to wait for one reply."""
    request_retries: Annotated[int, Range(min=0)] = 5
    """Retries of a request after a connection error or timeout, a reply cut short, HTTP 429 or 5xx, or a 200
    without a reply in it (not a JSON object, no choice, an error body), waiting `backoff * 2**attempt` seconds in
    between; lower it when other endpoints can take over (distillation fails over to them)."""
    backoff: Annotated[float, Range(min=0)] = 1.0
    """Seconds before the first retry of a request, doubled for each retry after it."""
    replica: Annotated[int | None, Range(min=0)] = None
    """Send every request to this replica of a vLLM server with data parallelism (its `X-data-parallel-rank`
    header); None lets the server send each to its least busy replica, which loses the prefix an episode's last turn
    left in another replica's cache. Eval and distill set it per attempt for the servers they start."""


class OpenAIPolicy:
    def __init__(self, config: OpenAIConfig) -> None:
        if not config.base_url:
            raise PolicyError("the openai policy has no endpoint: set agent.openai.base_url (--base-url), or give the "
                              "stage endpoints or a checkpoint to serve")
        self.config = config
        self.model = config.model or self._first_model()

    def request(self, path: str, body: dict | None, check: Callable[[dict], str | None] | None = None) -> dict:
        """POST `body` to `path` under the API root (GET without a body), with the configured retries: of a
        connection error or timeout, a body cut short, HTTP 429 or 5xx, and a 200 whose body is not a JSON object or
        one `check` refuses (it names what is missing; `act`: a reply without a message, such as `{"choices": []}`
        or an error sent with status 200), as OpenHands' LLM wrapper retries `LLMNoResponseError`. After the last
        retry, a `PolicyError` naming the failure and what the server sent, shortened."""
        key = os.environ.get(self.config.api_key_env, "")
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}),
                   **({"X-data-parallel-rank": str(self.config.replica)} if self.config.replica is not None else {})}
        data = json.dumps(body).encode() if body is not None else None
        url = self.config.base_url.rstrip("/") + path
        for attempt in range(self.config.request_retries + 1):
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
                with urllib.request.urlopen(req, timeout=self.config.request_timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                try:
                    detail = e.read().decode(errors="replace")[:2000]
                except (OSError, http.client.HTTPException) as cut:  # the error's body cut short
                    detail = f"({_error_text(cut)})"
                # vLLM: a prompt past max_model_len; exactly at it, no token left to generate
                if e.code == 400 and re.search(r"context length|maximum context|too long|max_tokens must be at least 1",
                                               detail, re.I):
                    raise ContextLimit(detail) from None
                if e.code in (401, 403, 404):
                    raise EndpointRefused(f"{url}: HTTP {e.code}: {detail}") from None
                if e.code != 429 and e.code < 500:
                    raise PolicyError(f"{url}: HTTP {e.code}: {detail}") from None
                failure = f"HTTP {e.code}: {detail}"
            # IncompleteRead and the rest of http.client's: a server or proxy that closed while sending the reply
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                failure = _error_text(e)
            else:
                reply, failure = _read_reply(raw, check)
                if failure is None:
                    return reply
            if attempt == self.config.request_retries:
                raise PolicyError(f"{url}: {failure}")
            time.sleep(self.config.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _first_model(self) -> str:
        models = self.request("/models", None, lambda reply: None if isinstance(reply.get("data"), list)
                              else "the reply has no model list")["data"]
        if not models:
            raise PolicyError(f"{self.config.base_url} serves no models")
        return models[0]["id"]

    def chat_request(self, messages: list[dict], tools: list[dict]) -> dict:
        """The body `act` posts to `/chat/completions`."""
        body = {"model": self.model, "messages": messages, "tools": tools, "tool_choice": "auto",
                "temperature": self.config.temperature, "top_p": self.config.top_p}
        if self.config.max_reply_tokens is not None:
            body["max_tokens"] = self.config.max_reply_tokens
        if self.config.top_k >= 0:
            body["top_k"] = self.config.top_k
        if self.config.seed is not None:
            body["seed"] = self.config.seed
        return body

    def act(self, messages: list[dict], tools: list[dict]) -> Reply:
        resp = self.request("/chat/completions", self.chat_request(messages, tools), _no_message)
        msg = resp["choices"][0]["message"]
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
        return Reply(assistant_message(msg.get("content"), msg.get("tool_calls")),
                     usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _no_message(reply: dict) -> str | None:
    """What a chat completion lacks to be a reply of the model's: its first choice's message (OpenHands raises
    `LLMNoResponseError` for a reply without choices, which its LLM wrapper retries)."""
    choices = reply.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)
            and isinstance(choices[0].get("message"), dict)):
        return "the reply has no message" if "error" not in reply else "the server sent an error"
    return None


def _read_reply(raw: bytes, check: Callable[[dict], str | None] | None) -> tuple[dict | None, str | None]:
    """The reply of a 200 and None, or None and what is wrong with it (with what was sent, shortened)."""
    try:
        reply = json.loads(raw)
    except ValueError:  # not JSON (cut short where no Content-Length frames the body), or not UTF-8
        return None, f"the reply is not JSON: {_shortened(raw)}"
    problem = "the reply is not a JSON object" if not isinstance(reply, dict) else check and check(reply)
    return (None, f"{problem}: {_shortened(raw)}") if problem else (reply, None)


def _shortened(raw: bytes, limit: int = 300) -> str:
    text = raw.decode(errors="replace")
    return text if len(text) <= limit else text[:limit] + f"... ({len(raw)} bytes)"


def _error_text(e: BaseException) -> str:
    return str(e) or type(e).__name__


def assistant_message(content: str | None, tool_calls: list | None) -> dict:
    """Normalise a server reply; tool calls written as `<tool_call>` text become real tool calls."""
    content = content or ""
    calls = [{"id": c.get("id") or _call_id(), "type": "function",
              "function": {"name": c["function"]["name"], "arguments": c["function"].get("arguments") or ""}}
             for c in tool_calls or []
             if isinstance(c, dict) and isinstance(c.get("function"), dict) and c["function"].get("name")]
    if not calls:
        content, calls = parse_text_tool_calls(content)
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return message


def parse_text_tool_calls(content: str) -> tuple[str, list[dict]]:
    """Split `content` into the text before its first tool call and the calls (`swehero.toolcalls`, the same reader
    as the importers' and the vLLM plugin's). When a call does not parse (a reply cut by the token limit), the whole
    text is the reply and it has no call, as vLLM's hermes parser and our plugin return it: OpenHands then answers
    it as any reply without a call."""
    found = toolcalls.blocks(content)
    if any(b.call is None for b in found):
        return content, []
    calls = [_call(b.call["name"], toolcalls.arguments_json(b.call["arguments"])) for b in found]
    return toolcalls.content_before(content, found), calls


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(name: str, arguments: str) -> dict:
    return {"id": _call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}
