"""CoT text -> segments, one anchor each.

Sentences and lines first; then, optionally, neighbouring sentences that say the same
thing are merged by sentence-embedding similarity, as the paper does with a small
sentence encoder. `embed` is any `list[str] -> (n, d)` callable; real runs pass
`lasar_trl.sid.embed.embed_texts` (all-MiniLM-L6-v2), tests a fake.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Sentence-ending punctuation (with closing quotes or brackets) followed by whitespace.
SENTENCE_END = re.compile(r"[.!?\u2026]+[\"')\]\u201d\u2019]*(?=\s)")
QUOTED = re.compile(r"\"[^\"]*\"|\u201c[^\u201d]*\u201d")
INITIALS = re.compile(r"(?:[A-Za-z]\.)+")  # e.g. i.e. U.S. J.
ABBREVIATIONS = frozenset(
    "mr. mrs. ms. dr. prof. st. sr. jr. sgt. mt. vs. cf. approx. fig. no. vol. inc. ltd. co. corp.".split()
)


def _continues(line: str, end: re.Match[str], quoted: list[tuple[int, int]]) -> bool:
    """True when punctuation at `end` does not end a sentence: the next word is lowercase
    or punctuation, it sits inside a quoted title, or it closes an abbreviation."""
    rest = line[end.end() :].lstrip()
    if not rest or rest[0].islower() or rest[0] in ",;:(":
        return True
    if any(start < end.start() and end.end() < stop for start, stop in quoted):
        return True
    word = line[: end.end()].split()[-1].lstrip("([\"'\u201c")
    return end.group() == "." and (word.lower() in ABBREVIATIONS or INITIALS.fullmatch(word) is not None)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, stripped, empties dropped: every line break ends one, and so
    does . ! ? (or an ellipsis) followed by whitespace, except after abbreviations ("e.g.",
    "Mrs."), inside "double-quoted" titles, or before a lowercase word. Decimals ("3.5")
    never split, having no whitespace after the point."""
    sentences = []
    for line in text.splitlines():
        quoted = [match.span() for match in QUOTED.finditer(line)]
        start = 0
        for end in SENTENCE_END.finditer(line):
            if not _continues(line, end, quoted):
                sentences.append(line[start : end.end()].strip())
                start = end.end()
        sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _centroid(vectors: Tensor, members: list[int]) -> Tensor:
    """A merged segment's embedding: the normalised mean of its members' unit vectors."""
    return F.normalize(vectors[members].mean(0), dim=-1)


def merge_similar(
    segments: Sequence[str],
    embed: Callable[[list[str]], Tensor],
    threshold: float = 0.8,
    max_segments: int | None = None,
) -> list[str]:
    """Join neighbouring segments (with a space) that say the same thing.

    Greedy, left to right: a segment joins the one before it when the cosine similarity of
    its embedding and that segment's centroid is >= `threshold`. Then, while more than
    `max_segments` remain, the most similar neighbouring pair is joined (the first on ties).
    """
    if max_segments is not None and max_segments < 1:
        raise ValueError(f"max_segments must be at least 1 (or None), got {max_segments}")
    if len(segments) <= 1:
        return list(segments)
    vectors = F.normalize(embed(list(segments)).float(), dim=-1)  # (S, D)
    if vectors.shape[0] != len(segments):
        raise ValueError(f"embed returned {vectors.shape[0]} vectors for {len(segments)} segments")
    groups: list[list[int]] = []
    for index in range(len(segments)):
        if groups and float(_centroid(vectors, groups[-1]) @ vectors[index]) >= threshold:
            groups[-1].append(index)
        else:
            groups.append([index])
    while max_segments is not None and len(groups) > max_segments:
        centroids = torch.stack([_centroid(vectors, group) for group in groups])  # (G, D)
        pair = int((centroids[:-1] * centroids[1:]).sum(-1).argmax())
        groups[pair : pair + 2] = [groups[pair] + groups[pair + 1]]
    return [" ".join(segments[index] for index in group) for group in groups]


def segment(
    text: str,
    *,
    embed: Callable[[list[str]], Tensor] | None = None,
    threshold: float = 0.8,
    max_segments: int | None = None,
) -> list[str]:
    """Sentences of `text`, merged by similarity when `embed` is given (see `merge_similar`)."""
    sentences = split_sentences(text)
    if embed is None:
        if max_segments is not None:
            raise ValueError("max_segments merges segments by similarity: pass embed (e.g. embed_texts)")
        return sentences
    return merge_similar(sentences, embed, threshold, max_segments)


def segment_end_offsets(text: str, segments: Sequence[str]) -> list[int]:
    """For each segment, the offset in `text` just past its last character (text[:end]
    ends with it): where its anchor token is. Segments are found in order; any run of
    whitespace in a segment matches any run in `text`, since merging joins with a space."""
    offsets, cursor = [], 0
    for index, segment_text in enumerate(segments):
        words = segment_text.split()
        if not words:
            raise ValueError(f"segment {index} is empty")
        found = re.compile(r"\s+".join(map(re.escape, words))).search(text, cursor)
        if found is None:
            raise ValueError(
                f"segment {index} ({segment_text[:60]!r}) not found in the text after character {cursor}: "
                "segments must come from this text, in order"
            )
        offsets.append(found.end())
        cursor = found.end()
    return offsets
