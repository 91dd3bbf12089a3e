"""Chain-of-thought data: rationale writers and the segmenter (DESIGN.md sec. 5)."""

from .segment import merge_similar, segment, segment_end_offsets, split_sentences
from .writer import MetadataRationaleWriter

__all__ = ["MetadataRationaleWriter", "merge_similar", "segment", "segment_end_offsets", "split_sentences"]
