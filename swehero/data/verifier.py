"""Verifier examples: an agent's attempt at a task, judged with one token, `yes` (it resolves the task) or `no`.

An example is the attempt's conversation (system prompt and tools, task message, the agent's turns), then a fixed
judging message (a user turn showing the attempt's final patch and asking whether it resolves the issue), then the
answer as the last assistant turn. Rendered with the data plane's `answer` mask, exactly one token carries loss:
the answer (`render_example` checks it for every example). At selection the same messages without the answer are
the prompt (rendered with the template's generation prompt: token for token the example's tokens before the
answer), and the next token's p(yes) / (p(yes) + p(no)) is the attempt's score.

Truncation, the same at training and at selection: an example longer than `seq_length` tokens keeps its head (the
system message and the first user message, the task) and as many of the last turns as fit (a turn is an assistant
message with the tool results and user messages that follow it), dropping whole turns from the middle; the
judging message then says how many messages were left out. When even the head, the judging message and the answer
do not fit, the patch shown is shortened from its middle (its first and last lines kept, whole lines, as many as
fit); when a one-line marker instead of the patch still does not fit, the attempt cannot be judged (None).
"""

from __future__ import annotations

from dataclasses import dataclass

from swehero.data.render import ChatRenderer, Rendered, TemplateError
from swehero.data.trajectory import template_messages
from swehero.errors import InputError

FORMAT = "swehero-verifier/1"
"""Identifies the judging message and truncation rule; recorded with examples and scores."""
ANSWERS = {True: "yes", False: "no"}
"""The answer for a resolved / unresolved attempt: each must be one token of the tokenizer."""
JUDGE = (
    "The conversation above is an attempt at the task. The final patch it leaves in the repository is:\n\n"
    "<patch>\n{patch}</patch>\n\n{omitted}"
    "Does this patch resolve the issue? Answer with one word: yes or no."
)
OMITTED = "({n} messages of the attempt, between the task and its last turns, were left out to fit the context.)\n\n"
PATCH_CUT = "[... {n} lines of the patch left out ...]\n"


def judging_message(patch: str, omitted_messages: int = 0) -> dict:
    """The user turn that asks for the verdict on `patch` (made to end with a newline)."""
    if patch and not patch.endswith("\n"):
        patch += "\n"
    omitted = OMITTED.format(n=omitted_messages) if omitted_messages else ""
    return {"role": "user", "content": JUDGE.format(patch=patch, omitted=omitted)}


def answer_message(resolved: bool) -> dict:
    return {"role": "assistant", "content": ANSWERS[resolved]}


def answer_token_ids(tokenizer) -> dict[bool, int]:
    """The token id of each answer; a tokenizer that splits an answer word cannot host the verifier."""
    out = {}
    for label, word in ANSWERS.items():
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise InputError(f"the verifier answers {word!r}, which the tokenizer {tokenizer.name_or_path} splits "
                             f"into {tokenizer.convert_ids_to_tokens(ids)}: each answer must be one token")
        out[label] = ids[0]
    return out


def shorten_patch(patch: str, keep: int) -> tuple[str, int]:
    """`patch` with only its first ceil(keep/2) and last floor(keep/2) lines, the rest replaced by a marker line;
    returns the text and how many lines were left out."""
    lines = patch.splitlines(keepends=True)
    if keep >= len(lines):
        return patch, 0
    head, tail = lines[: (keep + 1) // 2], lines[len(lines) - keep // 2:] if keep // 2 else []
    if head and not head[-1].endswith("\n"):
        head[-1] += "\n"
    cut = len(lines) - keep
    return "".join(head) + PATCH_CUT.format(n=cut) + "".join(tail), cut


def split_turns(messages: list[dict]) -> tuple[list[dict], list[list[dict]]]:
    """(head, turns): the messages up to the first user message (the task), and the rest cut into turns, each an
    assistant message with the messages that follow it before the next one. ValueError without a task message."""
    task = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if task is None:
        raise ValueError("the conversation has no task message (no user turn)")
    head, turns = messages[: task + 1], []
    for m in messages[task + 1:]:
        if m["role"] == "assistant" or not turns:
            turns.append([])
        turns[-1].append(m)
    return head, turns


@dataclass
class Judged:
    """An attempt made ready for the verifier: the conversation to judge, fitted to the sequence length."""

    messages: list[dict]
    """The kept conversation and the judging message (no answer)."""
    omitted_messages: int
    """Messages left out from the middle of the conversation."""
    omitted_patch_lines: int
    """Lines left out from the middle of the patch shown."""


class VerifierFormat:
    """Builds, fits, renders and checks verifier examples and prompts for one tokenizer and sequence length."""

    def __init__(self, tokenizer, seq_length: int) -> None:
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.renderer = ChatRenderer(tokenizer, mask="answer")
        self.answer_ids = answer_token_ids(tokenizer)

    def length(self, messages: list[dict], tools: list[dict]) -> int:
        """Tokens of the rendered conversation (as `render` would give them)."""
        text = self.renderer.text(template_messages(messages), tools)
        return len(self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)

    def judge(self, messages: list[dict], tools: list[dict], patch: str) -> Judged | None:
        """The conversation and judging message for `patch`, truncated by the module's rule so that, with an
        answer, it fits `seq_length`; None when it cannot fit. ValueError when there is no task message."""
        head, turns = split_turns(messages)

        def build(drop: int, patch_keep: int | None = None) -> Judged:
            shown, cut = (patch, 0) if patch_keep is None else shorten_patch(patch, patch_keep)
            omitted = sum(len(t) for t in turns[:drop])
            kept = [m for t in turns[drop:] for m in t]
            return Judged(head + kept + [judging_message(shown, omitted)], omitted, cut)

        def fits(judged: Judged) -> bool:
            return self.length(judged.messages + [answer_message(True)], tools) <= self.seq_length

        if fits(build(0)):
            return build(0)
        if fits(build(len(turns))):  # the fewest turns dropped from the front of the middle
            return build(_first(1, len(turns), lambda drop: fits(build(drop))))
        lines = len(patch.splitlines())
        if not fits(build(len(turns), 0)):
            return None
        keep = _first(0, lines, lambda k: not fits(build(len(turns), k))) - 1  # the most lines that fit
        return build(len(turns), keep)

    def prompt_ids(self, judged: Judged, tools: list[dict]) -> list[int]:
        """The tokens the verifier scores: the judged conversation and the generation prompt."""
        text = self.renderer.text(template_messages(judged.messages), tools, add_generation_prompt=True)
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def render_example(self, record: dict) -> Rendered:
        """Render a verifier example (a canonical record whose last message is the answer) and check that
        exactly one token, the answer's, carries loss."""
        rendered = self.renderer.render(record)
        trained = rendered.input_ids[rendered.loss_mask == 1].tolist()
        expected = self.answer_ids[record["resolved"]]
        if trained != [expected]:
            raise TemplateError(f"{record['id']}: the verifier example trains tokens {trained}, not only the answer "
                                f"token {expected}: the chat template renders the answer turn differently")
        return rendered


def _first(lo: int, hi: int, ok) -> int:
    """The smallest n in [lo, hi] with ok(n), for ok monotone (false ... false true ... true); hi + 1 if none."""
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid - 1
        else:
            lo = mid + 1
    return lo
