"""Render trajectories with the tokenizer's own chat template and mark exactly the tokens the assistant produced.

The text is rendered once by `apply_chat_template` (so ids equal `apply_chat_template(..., tokenize=True)` token
for token), then each assistant turn is located as a character span and the tokens overlapping a span get
loss 1 (found from byte positions for byte-level BPE tokenizers, from the tokenizer's offsets otherwise). A turn's span is what the model generates after the template's generation prompt: its content, its
tool-call blocks and the turn-closing marker (`<|im_end|>` for ChatML), without the role header or the
template's trailing newline. Spans come from rendering each assistant message, and each run of messages between
two of them, alone after a fixed probe turn (linear cost, unlike rendering every prefix); `prefix_spans` is the
slow, obviously-right definition that the tests hold the fast path to.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from swehero.data.sources import MAX_REJECT_FRACTION, checked_output, expand, parse_row, read_rows
from swehero.progress import progress
from swehero.data.trajectory import Reject, template_messages, validate
from swehero.errors import InputError, MissingInput
from swehero.recipe.stage import HUB_INPUT

MASK_POLICIES = ("all", "last", "answer")
"""Which assistant tokens are trained: every turn, only the final turn, or only the final turn's content without
its closing marker (a classifier's answer, e.g. a verifier's one-token `yes`/`no`: see `swehero.data.verifier`)."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""One of these makes a folder a tokenizer folder for transformers' AutoTokenizer."""


def load_tokenizer(ref: str | Path):
    """The tokenizer of a folder (or of a hub id, where no such local path exists), with the chat template every
    caller renders conversations with. One that cannot be loaded is an `InputError` naming `ref`: transformers' own
    messages name neither the folder nor what it lacks."""
    ref = str(ref)
    if not Path(ref).exists() and not HUB_INPUT.needs_no_file(ref):  # what a ModelRef setting accepts
        raise MissingInput(f"{ref}: no such tokenizer folder")
    if Path(ref).exists() and not any((Path(ref) / name).is_file() for name in TOKENIZER_FILES):
        raise MissingInput(f"{ref}: not a tokenizer folder (no {' or '.join(TOKENIZER_FILES)})")
    from transformers import AutoTokenizer  # seconds to import: paid only by the commands that tokenize

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as e:
        raise InputError(f"{ref}: cannot load its tokenizer: {' '.join(str(e).split())}") from None
    if not tokenizer.chat_template:
        raise InputError(f"{ref}: the tokenizer has no chat template (chat_template in tokenizer_config.json, or "
                         "chat_template.jinja)")
    return tokenizer


class TemplateError(RuntimeError):
    """The chat template does not render assistant turns in a way the span logic can trust."""


@dataclass
class Rendered:
    """One tokenized trajectory."""

    input_ids: np.ndarray
    """Token ids (int32), equal to `apply_chat_template(messages, tools=tools, tokenize=True)`."""
    loss_mask: np.ndarray
    """1 where the token is trained (uint8), same length as `input_ids`."""
    turn_ends: list[int]
    """Token index just past each assistant turn's closing marker: the places truncation may cut."""


class ChatRenderer:
    """Renders canonical trajectories with one tokenizer (a transformers fast tokenizer with a chat template)."""

    def __init__(self, tokenizer, mask: str = "all") -> None:
        if mask not in MASK_POLICIES:
            raise ValueError(f"mask policy {mask!r} not in {MASK_POLICIES}")
        self.tokenizer = tokenizer
        self.mask = mask
        self._probe = [{"role": "user", "content": "probe"}]
        self._probe_text = self.text(self._probe)
        opened = self.text(self._probe, add_generation_prompt=True)
        if not opened.startswith(self._probe_text):
            raise TemplateError("the generation prompt is not appended to the rendered conversation")
        self._header = opened[len(self._probe_text) :]
        piece = self._turn_piece([{"role": "assistant", "content": "X"}])
        if not piece.startswith(self._header + "X"):
            raise TemplateError(f"assistant turn does not start with the generation prompt {self._header!r}")
        tail = piece[len(self._header) + 1 :]
        self._tail = tail
        self.turn_end = tail.strip()
        """The marker closing an assistant turn (`<|im_end|>` for ChatML): the stop token, which a server
        leaves out of the text it hands to its tool-call parser."""
        self._tail_untrained = len(tail) - len(tail.rstrip())
        self._tail_trained = len(tail.rstrip())
        self._byte_lengths = byte_length_table(tokenizer.backend_tokenizer)
        self._special = [t.content for t in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()
                         if t.special]

    def trainable(self, record: dict) -> dict:
        """`record` (validated), unless an assistant turn writes a special token's text (`<|im_end|>` in a chat
        template the agent edits): rendered, it becomes that token, so the model would learn to end its turn there
        (or to write a token a server leaves out of the text it returns). Raises `Reject`; tool results and user
        messages may hold such text, as they do when the model runs. Searched in the messages as the template gets
        them (`template_messages`): arguments stored as a JSON string are decoded there, so an escaped
        `\\u003c|im_end|>` in them renders as the token too."""
        for i, m in enumerate(template_messages(record["messages"])):
            if m["role"] == "assistant":
                written = json.dumps(m, ensure_ascii=False)  # content, calls, arguments; JSON escapes none of them
                found = [token for token in self._special if token in written]
                if found:
                    raise Reject("special_token_in_turn", f"message {i} writes {', '.join(found)}")
        return record

    def text(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=tools or None, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _turn_piece(self, messages: list[dict]) -> str:
        rendered = self.text(self._probe + messages)
        if not rendered.startswith(self._probe_text):
            raise TemplateError("rendering a conversation is not a prefix of rendering it with one more turn")
        return rendered[len(self._probe_text) :]

    def spans(self, messages: list[dict], tools: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character span of every assistant turn's generated part, in order.

        Each turn is taken where the template puts it, not searched for: a tool result or user message may quote a
        rendered turn verbatim (a log of a chat), and a search would train the quote. The first turn ends the
        rendering of the conversation up to it; each later one starts where the previous turn and the messages
        after it, rendered alone after the probe turn, end."""
        msgs = template_messages(messages)
        text = self.text(msgs, tools)
        spans: list[tuple[int, int]] = []
        cursor, run_start = 0, 0  # where the messages since the last turn start in `text`, and their index
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            piece = self._turn_piece([m])
            if not piece.endswith(self._tail):
                raise TemplateError(f"assistant turn does not end with {self._tail!r}")
            if spans:
                pos = cursor + len(self._turn_piece(msgs[run_start:i])) if i > run_start else cursor
            else:  # the system prompt and tools render only at the start: this prefix is rendered as it is
                upto = self.text(msgs[: i + 1], tools)
                pos = len(upto) - len(piece) if upto.endswith(piece) and text.startswith(upto) else -1
            if pos < 0 or not text.startswith(piece, pos):
                raise TemplateError("an assistant turn renders differently inside the conversation than alone")
            spans.append((pos + len(self._header), pos + len(piece) - self._tail_untrained))
            cursor, run_start = pos + len(piece), i + 1
        return text, spans

    def prefix_spans(self, messages: list[dict], tools: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """Same as `spans`, by definition: render every prefix and take the differences (quadratic; for tests)."""
        msgs = template_messages(messages)
        text = self.text(msgs, tools)
        spans = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            before = self.text(msgs[:i], tools, add_generation_prompt=True)
            after = self.text(msgs[: i + 1], tools)
            if not (text.startswith(before) and text.startswith(after) and after.endswith(self._tail)):
                raise TemplateError(f"prefix property broken at message {i}")
            spans.append((len(before), len(after) - self._tail_untrained))
        return text, spans

    def render_batch(self, records: list[dict]) -> list[Rendered]:
        """Render and tokenize validated records (one batched tokenizer call)."""
        texts, all_spans = [], []
        for r in records:
            text, spans = self.spans(r["messages"], r["tools"])
            texts.append(text)
            if self.mask == "answer":  # the closing marker is the template's, not part of the answer
                spans = [(spans[-1][0], spans[-1][1] - self._tail_trained)]
            all_spans.append(spans[-1:] if self.mask == "last" else spans)
        backend = self.tokenizer.backend_tokenizer
        if self._byte_lengths is None:
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            return [_mark(enc, spans) for enc, spans in zip(encodings, all_spans)]
        # A text the normaliser changes is told first: its tokens' bytes are not the text's, so it is encoded once,
        # with offsets (one batch too), not twice (fast, then again with offsets).
        by_bytes = [_normalizer_keeps(backend.normalizer, text) for text in texts]
        fast = iter(backend.encode_batch_fast([t for t, ok in zip(texts, by_bytes) if ok], add_special_tokens=False))
        offsets = iter(backend.encode_batch([t for t, ok in zip(texts, by_bytes) if not ok], add_special_tokens=False))
        out = []
        for text, spans, ok in zip(texts, all_spans, by_bytes):
            if not ok:
                out.append(_mark(next(offsets), spans))
                continue
            r = _mark_by_bytes(np.array(next(fast).ids, dtype=np.int32), self._byte_lengths, text, spans)
            out.append(r or _mark(backend.encode(text, add_special_tokens=False), spans))
        return out

    def render(self, record: dict) -> Rendered:
        return self.render_batch([record])[0]


def byte_length_table(backend) -> np.ndarray | None:
    """For byte-level BPE tokenizers, the number of text bytes each token id stands for (None otherwise).

    With it, token positions follow from a cumulative sum over the ids, so the tokenizer can skip tracking
    offsets (`encode_batch_fast`: ~30% faster than `encode_batch`, and tokenization is most of the cost)."""
    from tokenizers import decoders, models

    if not (isinstance(backend.model, models.BPE) and isinstance(backend.decoder, decoders.ByteLevel)):
        return None
    table = np.zeros(backend.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    for token, i in backend.get_vocab(with_added_tokens=False).items():
        table[i] = len(token)  # byte-level vocab: one character per byte
    for i, added in backend.get_added_tokens_decoder().items():
        table[i] = len(added.content.encode("utf-8"))
    return table


def _normalizer_keeps(normalizer, text: str) -> bool:
    """True when the tokenizer's normaliser leaves `text` unchanged (NFC, as Qwen's, is checked without copying)."""
    from tokenizers import normalizers

    if normalizer is None:
        return True
    if isinstance(normalizer, normalizers.NFC):
        return unicodedata.is_normalized("NFC", text)
    return normalizer.normalize_str(text) == text


def _mark_by_bytes(ids: np.ndarray, byte_lengths: np.ndarray, text: str, spans) -> Rendered | None:
    """Like `_mark`, from byte positions, for a text the normaliser keeps (`_normalizer_keeps`); None when the
    tokens' bytes are not exactly the text's all the same, so the caller falls back to offsets."""
    ends = np.cumsum(byte_lengths[ids])
    if not len(ids) or ends[-1] != len(text.encode("utf-8")):
        return None
    starts = ends - byte_lengths[ids]
    mask = np.zeros(len(ids), dtype=np.uint8)
    turn_ends = []
    ascii_text = text.isascii()
    char, byte = 0, 0  # spans are in order: convert character to byte positions incrementally
    for a, b in spans:
        if not ascii_text:
            a_byte = byte + len(text[char:a].encode("utf-8"))
            char, byte = b, a_byte + len(text[a:b].encode("utf-8"))
            a, b = a_byte, byte
        lo, hi = int(np.searchsorted(ends, a, side="right")), int(np.searchsorted(starts, b, side="left"))
        mask[lo:hi] = 1
        turn_ends.append(hi)
    return Rendered(ids, mask, turn_ends)


def _mark(encoding, spans: list[tuple[int, int]]) -> Rendered:
    """Loss 1 on every token whose characters overlap a span (a token straddling a span edge is trained)."""
    mask = np.zeros(len(encoding.ids), dtype=np.uint8)
    turn_ends = []
    for a, b in spans:
        lo, hi = encoding.char_to_token(a), encoding.char_to_token(b - 1)
        if lo is None or hi is None:
            raise TemplateError(f"characters {a}..{b} of the rendered text map to no token")
        mask[lo : hi + 1] = 1
        turn_ends.append(hi + 1)
    return Rendered(np.array(encoding.ids, dtype=np.int32), mask, turn_ends)


def fit_length(r: Rendered, seq_length: int, policy: str) -> Rendered | None:
    """Make a trajectory fit `seq_length`: keep it, cut it after the last assistant turn that fits
    (`policy="truncate"`, never mid-turn), or drop it (`policy="drop"`, returns None); None also when nothing
    trained would remain."""
    if len(r.input_ids) <= seq_length:
        return r
    if policy == "drop":
        return None
    fitting = [e for e in r.turn_ends if e <= seq_length]
    if not fitting or not r.loss_mask[: fitting[-1]].any():
        return None
    cut = fitting[-1]
    return Rendered(r.input_ids[:cut], r.loss_mask[:cut], fitting)


def render_files(inputs: list[str], tokenizer, out, mask: str = "all",
                 max_reject_fraction: float = MAX_REJECT_FRACTION) -> dict:
    """Write `{"id", "input_ids", "loss_mask"}` per valid canonical trajectory in `inputs` to JSONL `out`
    (rejects to `<out>.rejects.jsonl`); returns counts. More than `max_reject_fraction` of the rows rejected is an
    InputError, as in `prepare` and `import`, and `out` is then not written (nor anything half-written left)."""
    renderer = ChatRenderer(tokenizer, mask=mask)
    with checked_output(Path(out), max_reject_fraction, inputs) as (tmp, rejects, n), \
            open(tmp, "w", encoding="utf-8") as f, progress("render", " rows") as bar:
        for path in expand(inputs):
            for where, row in read_rows(path):
                n["read"] += 1
                bar.update()
                try:
                    row = parse_row(row)
                    record = renderer.trainable(validate(row))
                except Reject as r:  # with the row's id, as `import` and `prepare` write it
                    rejects.add(where, r, row.get("id") if isinstance(row, dict) else None)
                    continue
                r = renderer.render(record)
                ids, trained = r.input_ids.tolist(), r.loss_mask.tolist()
                f.write(json.dumps({"id": record["id"], "input_ids": ids, "loss_mask": trained}) + "\n")
                n["written"] += 1
    return {"written": n["written"], "rejected": dict(rejects.counts)}


def highlight(r: Rendered, tokenizer, style) -> str:
    """The rendered text with trained tokens passed through `style` (e.g. click.style), run by run."""
    parts, start = [], 0
    edges = np.flatnonzero(np.diff(r.loss_mask.astype(np.int8))) + 1
    for end in [*edges.tolist(), len(r.input_ids)]:
        text = tokenizer.decode(r.input_ids[start:end].tolist())
        parts.append(style(text) if r.loss_mask[start] else text)
        start = end
    return "".join(parts)


def show(path: Path, index: int, tokenizer, mask: str, style) -> tuple[str, str]:
    """`swehero data show`: trajectory `index` of a file rendered with trained tokens styled, and a summary line.
    Raises `Reject` (with the row's file:line) for a trajectory that cannot be used, IndexError past the end."""
    if index < 0:  # islice takes no negative start; counting from the end would read the whole file anyway
        raise IndexError(f"--index {index}: must be 0 or more")
    row = next(islice(read_rows(Path(path)), index, None), None)
    if row is None:
        raise IndexError(f"{path} has no trajectory {index}")
    renderer = ChatRenderer(tokenizer, mask=mask)
    try:
        record = renderer.trainable(validate(parse_row(row[1])))
    except Reject as e:
        raise Reject(e.reason, f"{row[0]}: {e.detail}") from None
    r = renderer.render(record)
    return highlight(r, tokenizer, style), f"[{row[0]}] {len(r.input_ids)} tokens, {int(r.loss_mask.sum())} trained"
