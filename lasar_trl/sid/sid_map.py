"""Item id -> Semantic ID: the map every stage, checkpoint and evaluation shares.

A SID is a tuple of tokens `<letter_code>`, one letter per level (`<a_12><b_200><c_7><d_3>`).
Every SID in a map has the same length and names exactly one item; the last level
disambiguates items whose quantised codes collide.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch

from ..atomic import read_json_object, write_json_atomic

logger = logging.getLogger(__name__)

TOKEN_RE = re.compile(r"<([a-z]+)_(\d+)>")
SID_RE = re.compile(r"(?:<[a-z]+_\d+>)+")
LEVEL_LETTERS = string.ascii_lowercase
MAP_FILE = "sid_map.json"
STATS_FILE = "sid_stats.json"


class SidMapMismatchError(ValueError):
    """A SID map meets a checkpoint or a dataset it was not made for."""


def catalog_fingerprint(item_ids: Iterable[str]) -> str:
    """A short hash of a catalog's item ids, in any order: what a map records of the data it was built from."""
    return hashlib.sha256("\n".join(sorted_item_ids(item_ids)).encode()).hexdigest()[:16]


def dataset_record(dataset: str, item_ids: Iterable[str]) -> dict:
    """The `stats` entries naming the dataset a map was built from (checked by `SidMap.check_built_from`)."""
    ids = list(item_ids)
    return {"dataset": dataset, "catalog_items": len(ids), "catalog_fingerprint": catalog_fingerprint(ids)}


def sorted_item_ids(item_ids: Iterable[str]) -> list[str]:
    """Deterministic item order: numeric when every id is digits ("2" < "10"), else as strings."""
    ids = list(item_ids)
    if all(item.isdigit() for item in ids):
        return sorted(ids, key=lambda item: (int(item), item))
    return sorted(ids)


def _token_key(token: str) -> tuple[str, int]:
    letter, code = TOKEN_RE.fullmatch(token).groups()
    return letter, int(code)


def _check_tokens(tokens: Mapping[str, tuple[str, ...]], where: str, *, unique: bool = True) -> None:
    """Raise ValueError naming `where` and the item unless SIDs are well formed, equally long, unique."""
    if not tokens:
        raise ValueError(f"{where}: the SID map has no items")
    first_item, first_sid = next(iter(tokens.items()))
    owner: dict[str, str] = {}
    for item, sid in tokens.items():
        for token in sid:
            if not TOKEN_RE.fullmatch(token):
                raise ValueError(f"{where}: item {item!r} has malformed SID token {token!r} (expected <letter_code>)")
        if len(sid) != len(first_sid):
            raise ValueError(
                f"{where}: item {item!r} has {len(sid)} SID tokens but item {first_item!r} has "
                f"{len(first_sid)}; all SIDs of a map have the same length"
            )
        sid_string = "".join(sid)
        if unique and sid_string in owner:
            raise ValueError(
                f"{where}: items {owner[sid_string]!r} and {item!r} share SID {sid_string}; "
                "SIDs must be unique (build the map with a disambiguation level)"
            )
        owner[sid_string] = item


def _collision_groups(tokens: Mapping[str, tuple[str, ...]]) -> Counter[str]:
    """SID string -> number of items carrying it."""
    return Counter("".join(sid) for sid in tokens.values())


def _disambiguate(tokens: Mapping[str, tuple[str, ...]], letter: str, size: int) -> dict[str, tuple[str, ...]]:
    """Append `<letter_j>` to every SID, j = rank of the item among those sharing its SID (item order)."""
    groups = _collision_groups(tokens)
    sid_string, largest = groups.most_common(1)[0]
    if largest > size:
        raise ValueError(
            f"{largest} items share SID {sid_string}, more than the disambiguation codebook size {size}; "
            "raise codebook_size or levels, or check for items with empty or identical text"
        )
    seen: Counter[str] = Counter()
    result = {}
    for item, sid in tokens.items():
        sid_string = "".join(sid)
        result[item] = (*sid, f"<{letter}_{seen[sid_string]}>")
        seen[sid_string] += 1
    return result


def level_usage(codes: Sequence[Hashable], available: int) -> dict:
    """How evenly one level spreads its items over its codes.

    `codes`: the code of every item at this level; `available`: the codebook size.
    normalised_entropy = entropy / log(min(available, items)), 1.0 when the items are spread
    as evenly as the codebook allows (and when only one code is possible); largest_share is
    the fraction of items under the most used code. Together they show a level that is
    nearly flat even when every code is used once.
    """
    counts = Counter(codes)
    total = len(codes)
    entropy = -sum(count / total * math.log(count / total) for count in counts.values())
    possible = min(available, total)
    return {
        "codes_used": len(counts),
        "normalised_entropy": round(entropy / math.log(possible), 4) if possible > 1 else 1.0,
        "largest_share": round(max(counts.values()) / total, 4),
    }


def _inferred_sizes(tokens: Mapping[str, tuple[str, ...]]) -> list[int]:
    """Per SID position, the smallest codebook that holds its codes (largest code + 1)."""
    length = len(next(iter(tokens.values())))
    return [max(_token_key(sid[level])[1] for sid in tokens.values()) + 1 for level in range(length)]


def _describe(
    before: Mapping[str, tuple[str, ...]], after: Mapping[str, tuple[str, ...]], available: Sequence[int]
) -> dict:
    """Stats of a map `after` built from possibly colliding SIDs `before` (same items).

    `available`: codebook size per SID position of `after`, for the normalised entropy.
    """
    groups = _collision_groups(before)
    shared = [count for count in groups.values() if count > 1]
    levels = len(next(iter(before.values())))
    sid_length = len(next(iter(after.values())))
    usage = [level_usage([sid[level] for sid in after.values()], available[level]) for level in range(sid_length)]
    return {
        "num_items": len(after),
        "sid_length": sid_length,
        "levels": levels,
        "disambiguation_level": sid_length > levels,
        "codes_used_per_level": [level["codes_used"] for level in usage],
        "codebook_size_per_level": list(available),
        "normalised_entropy_per_level": [level["normalised_entropy"] for level in usage],
        "largest_code_share_per_level": [level["largest_share"] for level in usage],
        "shared_sids": len(shared),
        "items_in_shared_sids": sum(shared),
        "max_items_per_sid": max(groups.values()),
    }


class SidMap:
    """Item id -> Semantic ID tokens; all SIDs unique and of one length (`sid_length`).

    `stats` (JSON-ready dict) says how the map was made: num_items, sid_length, levels
    (quantisation levels before disambiguation), disambiguation_level (bool); per SID
    position codes_used_per_level (distinct tokens), codebook_size_per_level (given, or
    inferred as largest code + 1), normalised_entropy_per_level and
    largest_code_share_per_level (see `level_usage`); shared_sids and items_in_shared_sids
    (collisions before disambiguation: items_in_shared_sids counts the items whose quantised
    codes equal another item's), max_items_per_sid (largest collision group, 1 when none);
    builders add embedding_source and its settings, and the dataset it was built from
    (`dataset_record`). `source` is the file it was read from, for messages.
    """

    def __init__(self, tokens: Mapping[str, Sequence[str]], stats: dict | None = None, *, where: str = "SidMap"):
        self.source = where
        self._tokens = {str(item): tuple(sid) for item, sid in tokens.items()}
        _check_tokens(self._tokens, where)
        self._by_sid = {"".join(sid): item for item, sid in self._tokens.items()}
        if stats is None:
            stats = _describe(self._tokens, self._tokens, _inferred_sizes(self._tokens))
        self.stats = stats

    @classmethod
    def from_codes(
        cls,
        item_ids: Sequence[str],
        codes: torch.Tensor,
        *,
        disambiguate: bool = True,
        disambiguation_size: int = 256,
        codebook_size: int | None = None,
    ) -> SidMap:
        """Tokens `<a_i><b_j><c_k>` from codes (n, L) long, row r for item_ids[r].

        `codebook_size`: codes available at each quantised level, for the stats (None: the
        largest code + 1).

        With `disambiguate`, every item gets one more level (`<d_0>` for the first item of
        a code tuple in item order, `<d_1>` for the second, ...), so all SIDs are unique
        and L + 1 long even where nothing collides: the length stays a fixed property of
        the build settings. Without it, colliding codes are an error.
        """
        if len(item_ids) == 0:
            raise ValueError("from_codes: no items")
        if codes.ndim != 2 or codes.shape[0] != len(item_ids):
            raise ValueError(f"codes must be (num_items={len(item_ids)}, levels), got {tuple(codes.shape)}")
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item_ids contain duplicates")
        levels = codes.shape[1]
        if levels + disambiguate > len(LEVEL_LETTERS):
            raise ValueError(f"at most {len(LEVEL_LETTERS)} SID levels, got {levels + disambiguate}")
        before = {
            str(item): tuple(f"<{LEVEL_LETTERS[level]}_{code}>" for level, code in enumerate(row))
            for item, row in zip(item_ids, codes.tolist())
        }
        after = _disambiguate(before, LEVEL_LETTERS[levels], disambiguation_size) if disambiguate else before
        sizes = [codebook_size] * levels if codebook_size is not None else _inferred_sizes(before)
        return cls(after, _describe(before, after, sizes + [disambiguation_size] * disambiguate))

    @classmethod
    def from_shipped(cls, shipped: Mapping[str, Sequence[str]], *, disambiguation_size: int = 256) -> SidMap:
        """A precomputed map (LETTER: 4 tokens, MiniOneRec: 3) kept as shipped when its SIDs are unique.

        When some items share a SID, every item gets one more level, named by the letter
        after the last letter the map uses (`<d_j>` after `<c_*>`), numbered in item order
        (`sorted_item_ids`); the collisions are logged and kept in `stats`.
        """
        before = {item: tuple(shipped[item]) for item in sorted_item_ids(shipped)}
        _check_tokens(before, "shipped SID map", unique=False)
        groups = _collision_groups(before)
        sizes = _inferred_sizes(before)
        if max(groups.values()) == 1:
            return cls(before, _describe(before, before, sizes))
        letters = {TOKEN_RE.fullmatch(token).group(1) for sid in before.values() for token in sid}
        last = max(letters)
        if any(len(letter) > 1 for letter in letters) or last == LEVEL_LETTERS[-1]:
            raise ValueError(f"shipped SID map uses level names {sorted(letters)}: no next letter to disambiguate with")
        letter = LEVEL_LETTERS[LEVEL_LETTERS.index(last) + 1]
        after = _disambiguate(before, letter, disambiguation_size)
        sid_map = cls(after, _describe(before, after, [*sizes, disambiguation_size]))
        logger.info(
            "shipped SID map: %d SIDs shared by %d items; appended disambiguation level <%s_*>",
            sid_map.stats["shared_sids"],
            sid_map.stats["items_in_shared_sids"],
            letter,
        )
        return sid_map

    @property
    def sid_length(self) -> int:
        """Tokens per SID: levels + 1 when built; imported maps as shipped, +1 if they had collisions."""
        return len(next(iter(self._tokens.values())))

    @property
    def item_ids(self) -> list[str]:
        return list(self._tokens)

    @property
    def items_by_sid(self) -> Mapping[str, str]:
        """SID string -> item id (read-only): decodes a generated SID back to its item."""
        return MappingProxyType(self._by_sid)

    def __getitem__(self, item_id: str) -> tuple[str, ...]:
        return self._tokens[item_id]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SidMap):
            return NotImplemented
        return self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"SidMap({len(self)} items, sid_length={self.sid_length})"

    def sid(self, item_id: str) -> str:
        """The item's SID as text, e.g. "<a_12><b_200><c_7><d_3>"."""
        return "".join(self._tokens[item_id])

    def all_tokens(self) -> list[str]:
        """Distinct SID tokens by level letter, then code (`<a_2>` before `<a_10>`): new tokenizer rows."""
        return sorted({token for sid in self._tokens.values() for token in sid}, key=_token_key)

    def check_built_from(self, dataset: str, catalog_ids: Iterable[str]) -> None:
        """Refuse a map recorded as built from another catalog: another dataset's item ids can
        overlap this one's (ml-100k's all exist in larger maps) and would train without a word.
        A map without the record (built before it was kept) is only warned about, when its items
        differ from the catalog's."""
        ids = set(catalog_ids)
        recorded = self.stats.get("catalog_fingerprint")
        if recorded is None:
            if ids != set(self._tokens):
                logger.warning(
                    "%s records no dataset it was built from, and its %d items differ from the %d of %s's catalog: "
                    "check it was built for this dataset (recipes/build_sids.py records it)",
                    self.source,
                    len(self),
                    len(ids),
                    dataset,
                )
            return
        if recorded != catalog_fingerprint(ids):
            raise SidMapMismatchError(
                f"{self.source} was built from dataset {self.stats.get('dataset')!r} "
                f"({self.stats.get('catalog_items')} catalog items), not from the --dataset given, {dataset!r} "
                f"({len(ids)} items): its SIDs name other items. Build a map for this dataset "
                "(recipes/build_sids.py --dataset ...), or pass the dataset the map was built for."
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write `path/sid_map.json` (flat object item id -> SID string) and `path/sid_stats.json`."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / MAP_FILE, {item: "".join(sid) for item, sid in self._tokens.items()})
        write_json_atomic(folder / STATS_FILE, self.stats)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SidMap:
        """Read a folder holding `sid_map.json` (or that file); `sid_stats.json` beside it if present."""
        file = Path(path)
        if file.is_dir():
            file = file / MAP_FILE
        raw = read_json_object(file)
        tokens = {}
        for item, sid_string in raw.items():
            if not isinstance(sid_string, str) or not SID_RE.fullmatch(sid_string):
                raise ValueError(f"{file}: item {item!r} has malformed SID {sid_string!r} (expected <a_1><b_2>...)")
            tokens[item] = tuple(match.group(0) for match in TOKEN_RE.finditer(sid_string))
        stats_file = file.parent / STATS_FILE
        stats = read_json_object(stats_file) if stats_file.exists() else None
        return cls(tokens, stats, where=str(file))
