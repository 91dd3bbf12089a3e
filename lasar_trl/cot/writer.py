"""Offline rationales from catalog metadata: a weak teacher.

The paper asks a strong LLM for a rationale per training sample. Without one,
`MetadataRationaleWriter` composes a short multi-step rationale from what the catalog and
the training windows say: which categories and brands recur in the history, whether the
focus drifted, what the last one or two items were, which categories most often follow
the last item's in training, and a conclusion weighing the two. It only counts and
restates; it does not reason about taste. That is enough to
run the whole pipeline (segments -> anchors -> latent SFT) without an LLM, not to match
the paper's teacher. Datasets without item text (catalog entries `{}`) get even less: the
writer can only describe SID-prefix patterns (recurring first SID tokens, the last item's
prefix, the prefix that most often follows it in training).

Deterministic: the same history gives the same text. It sees only the history, never the
target.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from ..data.schema import Window
from ..sid.sid_map import SidMap

TOP_RECURRING = 3  # labels named in a "recurring" sentence
TOP_FOLLOWING = 2  # next labels named in the "what tends to follow" sentence


def _clean(text: str) -> str:
    """One line, no double quotes: metadata is quoted or listed inside our sentences."""
    return " ".join(text.split()).replace('"', "'")


def _listing(counts: Counter[str], total: int, top: int) -> str:
    """'Drama (5 of 10 items), Comedy (3) and War (2)': labels seen at least twice, most frequent first."""
    recurring = [(label, count) for label, count in counts.most_common(top) if count >= 2]
    if not recurring:
        return ""
    parts = [f"{label} ({count})" for label, count in recurring]
    parts[0] = f"{recurring[0][0]} ({recurring[0][1]} of {total} items)"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _either(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


class MetadataRationaleWriter:
    """Writes 1-7 sentences per history, one idea each, ending with a period; steps with
    nothing to say are skipped, so the sentence (segment) count varies with the history.

    A label is a category (text catalogs) or a first SID token (catalogs without text).
    Categories are split on commas when any item's categories contain one (Amazon paths),
    else on whitespace (RecBole token_seq). Categories on more than half of the catalog's
    items (Amazon's top-level "Beauty") say nothing and are ignored.
    """

    def __init__(self, catalog: Mapping[str, Mapping[str, str]], sid_map: SidMap, train_windows: Iterable[Window]):
        self.catalog = catalog
        self.sid_map = sid_map
        self.has_text = any(catalog.values())
        self.labels = self._item_labels()
        # "What tends to follow", one pass over the training windows: for each label of the
        # last history item, how many windows it ends and how often each label comes next.
        self.windows_ending_with: Counter[str] = Counter()
        self.next_labels: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for window in train_windows:
            for label in self.labels.get(window.history[-1], ()):
                self.windows_ending_with[label] += 1
                self.next_labels[label].update(self.labels.get(window.target, ()))

    def _item_labels(self) -> dict[str, tuple[str, ...]]:
        if not self.has_text:
            return {item: self.sid_map[item][:1] for item in self.sid_map.item_ids}
        raw = [str(fields.get("categories") or "") for fields in self.catalog.values()]
        separator = "," if any("," in categories for categories in raw) else None
        labels = {
            item: tuple(dict.fromkeys(_clean(c) for c in categories.split(separator) if c.strip()))
            for item, categories in zip(self.catalog, raw)
        }
        items_with = Counter(label for item_labels in labels.values() for label in item_labels)
        too_common = {label for label, count in items_with.items() if count > len(labels) / 2}
        return {item: tuple(c for c in labels[item] if c not in too_common) for item in labels}

    def write(self, history: Sequence[str]) -> str:
        """The rationale for a history of item ids (oldest first), as one paragraph."""
        return " ".join(self.sentences(history))

    def sentences(self, history: Sequence[str]) -> list[str]:
        """The rationale's steps before joining: recurring labels, recurring brands (or
        two-token SID prefixes), drift, recency, what tends to follow, weighing the two
        when they disagree, conclusion."""
        if not history:
            raise ValueError("a rationale needs a non-empty history")
        steps = (
            self._recurring_labels,
            self._recurring_details,
            self._drift,
            self._recency,
            self._what_follows,
            self._weigh,
            self._conclusion,
        )
        return [sentence for step in steps if (sentence := step(history))]

    def _recurring_labels(self, history: Sequence[str]) -> str:
        counts = Counter(label for item in history for label in self.labels.get(item, ()))
        listing = _listing(counts, len(history), TOP_RECURRING)
        noun = "categories" if self.has_text else "SID prefixes"
        return f"Recurring {noun}: {listing}." if listing else ""

    def _recurring_details(self, history: Sequence[str]) -> str:
        """Brands with text; without text, two-token SID prefixes (the next level down)."""
        if self.has_text:
            brands = Counter(_clean(self.catalog.get(item, {}).get("brand") or "") for item in history)
            del brands[""]
            listing = _listing(brands, len(history), TOP_RECURRING)
            return f"Recurring brands: {listing}." if listing else ""
        prefixes = Counter("".join(self.sid_map[item][:2]) for item in history)
        listing = _listing(prefixes, len(history), TOP_RECURRING)
        return f"Recurring two-token prefixes: {listing}." if listing else ""

    def _top_label(self, items: Sequence[str]) -> tuple[str, int]:
        counts = Counter(label for item in items for label in self.labels.get(item, ()))
        return counts.most_common(1)[0] if counts else ("", 0)

    def _drift(self, history: Sequence[str]) -> str:
        """Said when the most frequent labels of the older and the recent half (each seen at
        least twice) differ."""
        if len(history) < 4:
            return ""
        older, older_count = self._top_label(history[: len(history) // 2])
        recent, recent_count = self._top_label(history[len(history) // 2 :])
        if older == recent or min(older_count, recent_count) < 2:
            return ""
        return f"Lately the focus moved from {older} to {recent}."

    def _name(self, item: str) -> str:
        title = _clean(self.catalog.get(item, {}).get("title") or "")
        return f'"{title}"' if title else self.sid_map.sid(item)

    def _recency(self, history: Sequence[str]) -> str:
        last = self.labels.get(history[-1], ())
        if len(history) >= 2:
            shared = [label for label in self.labels.get(history[-2], ()) if label in last]
            if shared:
                if not self.has_text:
                    return f"The last two items both start with {shared[0]}."
                return (
                    f"The last two items, {self._name(history[-2])} and {self._name(history[-1])}, "
                    f"are both {' and '.join(shared)}."
                )
        if not self.has_text:
            return f"The most recent item starts with {last[0]}."
        labels = f" ({', '.join(last)})" if last else ""
        return f"The most recent item is {self._name(history[-1])}{labels}."

    def _next_shares(self, history: Sequence[str]) -> Counter[str]:
        """Label -> share of training windows ending like this history whose next item carries it."""
        last = self.labels.get(history[-1], ())
        windows = sum(self.windows_ending_with[label] for label in last)
        following = sum((self.next_labels[label] for label in last), Counter())
        return Counter({label: count / windows for label, count in following.items()})

    def _what_follows(self, history: Sequence[str]) -> str:
        shares = self._next_shares(history)
        if not shares:
            return ""
        last = _either(self.labels[history[-1]])
        top = shares.most_common(TOP_FOLLOWING)
        listing = ", then ".join(f"{label} ({round(100 * share)}%)" for label, share in top)
        if not self.has_text:
            return f"After an item starting with {last}, the next item most often starts with {listing}."
        return f"After {last}, the next item is most often {listing}."

    def _weigh(self, history: Sequence[str]) -> str:
        """Said when the history's most frequent label (seen at least twice) is not the one that
        most often follows its last item."""
        favoured, count = self._top_label(history)
        shares = self._next_shares(history)
        if count < 2 or not shares:
            return ""
        following = shares.most_common(1)[0][0]
        if favoured == following:
            return ""
        return f"The history favours {favoured}, while {following} more often comes next."

    def _conclusion(self, history: Sequence[str]) -> str:
        """The label best supported by both the history and what follows its last item."""
        scores = self._next_shares(history)
        for item in history:
            for label in self.labels.get(item, ()):
                scores[label] += 1 / len(history)
        if not scores:
            return ""
        best = max(scores, key=lambda label: (scores[label], label))  # ties: the later name
        if not self.has_text:
            return f"So the next item likely starts with {best}."
        return f"So the next item is likely {best}."
