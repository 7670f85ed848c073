"""What a policy is to the loop: something that answers a conversation with one assistant message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class Reply:
    message: dict
    """The assistant message, OpenAI format (`tool_calls` with JSON-string `arguments`)."""
    prompt_tokens: int | None = None
    """The server's count of the conversation it was given, when it reports one."""
    completion_tokens: int | None = None


class Policy(Protocol):
    def act(self, messages: list[dict], tools: list[dict]) -> Reply: ...


class PolicyError(RuntimeError):
    """The model could not be queried (after retries): the episode ends."""


class ContextLimit(PolicyError):
    """The server refused the request because the conversation no longer fits the model's context."""


class EndpointRefused(PolicyError):
    """The server refuses to serve this client at all (HTTP 401, 403, 404: a missing key, a misspelt model name):
    it would refuse every request alike, whatever the conversation."""
