"""Text chunks: sentences, or sliding windows of words with an overlap.

A text model reads at most its max_seq_length tokens (256 for all-MiniLM-L6-v2) and cuts
the rest; chunks of a sentence or a window of words each fit, so every part of a long
document reaches the index. offset_nd holds the chunk's [start, end) in characters of the
document text; weight is the chunk's share of the document's words (for weighted ranking).
"""

from __future__ import annotations

import re

from ..component import check_int
from ..proto import doc_text, pb
from .base import BasePreprocessor

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) before
# whitespace, or at a blank line. Good enough for news text; abbreviations split too early.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\n\s*\n")
_WORD = re.compile(r"\S+")


def _text_of(doc: pb.Document) -> str:
    text = doc_text(doc)
    if not text.strip():
        raise ValueError(f"document {doc.doc_id} has no text to split")
    return text


def _chunk(text: str, start: int, end: int, words: int, total_words: int) -> pb.Chunk:
    chunk = pb.Chunk(text=text[start:end])
    chunk.offset_nd.extend([start, end])
    chunk.weight = words / total_words
    return chunk


class SentenceSplitter(BasePreprocessor):
    """One chunk per sentence; sentences shorter than `min_words` join the next one, and
    `sentences_per_chunk` consecutive sentences may form one chunk."""

    def __init__(
        self, sentences_per_chunk: int = 1, min_words: int = 3, max_chunks: int = 256, chunks_per_message: int = 64
    ) -> None:
        super().__init__(max_chunks, chunks_per_message)
        self.sentences_per_chunk = check_int("sentences_per_chunk", sentences_per_chunk, minimum=1)
        self.min_words = check_int("min_words", min_words, minimum=1)

    def _chunks(self, doc: pb.Document) -> list[pb.Chunk]:
        text = _text_of(doc)
        spans: list[tuple[int, int, int]] = []  # start, end, words of each sentence
        start = 0
        for end_match in [*_SENTENCE_END.finditer(text), None]:
            end = end_match.start() if end_match is not None else len(text)
            piece = text[start:end]
            words = len(_WORD.findall(piece))
            if words:
                lead = len(piece) - len(piece.lstrip())
                spans.append((start + lead, start + len(piece.rstrip()), words))
            if end_match is not None:
                start = end_match.end()
        total = sum(w for _, _, w in spans)
        chunks: list[pb.Chunk] = []
        group: list[tuple[int, int, int]] = []
        for span in spans:
            group.append(span)
            words = sum(w for _, _, w in group)
            if len(group) >= self.sentences_per_chunk and words >= self.min_words:
                chunks.append(_chunk(text, group[0][0], group[-1][1], words, total))
                group = []
        if group:  # a short tail joins the chunk before it
            if chunks:
                last = chunks.pop()
                begin = last.offset_nd[0]
                words = len(_WORD.findall(text[begin : group[-1][1]]))
                chunks.append(_chunk(text, begin, group[-1][1], words, total))
            else:
                chunks.append(_chunk(text, group[0][0], group[-1][1], sum(w for _, _, w in group), total))
        return chunks


class SlidingWindowSplitter(BasePreprocessor):
    """Windows of `window` words, a new one every `stride` words (window - stride words of
    overlap); the last window ends at the document's last word."""

    def __init__(self, window: int = 64, stride: int = 32, max_chunks: int = 256, chunks_per_message: int = 64) -> None:
        super().__init__(max_chunks, chunks_per_message)
        self.window = check_int("window", window, minimum=1)
        self.stride = check_int("stride", stride, minimum=1, maximum=self.window)

    def _chunks(self, doc: pb.Document) -> list[pb.Chunk]:
        text = _text_of(doc)
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        starts = list(range(0, max(len(words) - self.window, 0) + 1, self.stride))
        if starts[-1] + self.window < len(words):
            starts.append(len(words) - self.window)
        return [
            _chunk(
                text,
                words[s][0],
                words[min(s + self.window, len(words)) - 1][1],
                min(self.window, len(words) - s),
                len(words),
            )
            for s in starts
        ]
