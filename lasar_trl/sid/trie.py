"""Prefix trie over valid SIDs, with vectorised masking for constrained decoding.

All SIDs in a map have the same length L, so every beam of a request sits at
the same depth at every step: masking is one gather from a per-depth table,
never a Python loop over beams. Nodes have global ids; depth-k nodes are the
distinct length-k prefixes, depth L nodes are the items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from .sid_map import SidMap

NO_NODE = -1


class SidTrie:
    """Transition tables over SID token ids.

    `children[k]`: LongTensor (num depth-k nodes, C_k), the global id of the
    child reached by the k-th level's c-th code token, or -1.
    `codebook[k]`: LongTensor (C_k,) vocabulary ids of the tokens used at depth k.
    """

    def __init__(self, sid_token_ids: torch.Tensor, eos_token_id: int):
        if sid_token_ids.ndim != 2 or sid_token_ids.shape[0] == 0:
            raise ValueError("sid_token_ids must be a non-empty (num_items, sid_length) tensor")
        if torch.unique(sid_token_ids, dim=0).shape[0] != sid_token_ids.shape[0]:
            raise ValueError("SIDs must be unique to build a trie")
        self.sid_token_ids = sid_token_ids.long()
        self.num_items, self.sid_length = sid_token_ids.shape
        self.eos_token_id = eos_token_id

        self.codebook: list[torch.Tensor] = []
        self.children: list[torch.Tensor] = []
        self.depth_offset: list[int] = []
        paths = [torch.zeros(self.num_items, dtype=torch.long)]  # global node id per item per depth
        parent_local = torch.zeros(self.num_items, dtype=torch.long)
        num_parents, offset = 1, 0
        for depth in range(self.sid_length):
            self.depth_offset.append(offset)
            codebook, token_local = torch.unique(self.sid_token_ids[:, depth], return_inverse=True)
            prefixes, child_local = torch.unique(self.sid_token_ids[:, : depth + 1], dim=0, return_inverse=True)
            child_global = offset + num_parents + child_local
            table = torch.full((num_parents, len(codebook)), NO_NODE, dtype=torch.long)
            table[parent_local, token_local] = child_global
            self.codebook.append(codebook)
            self.children.append(table)
            paths.append(child_global)
            offset, num_parents, parent_local = offset + num_parents, len(prefixes), child_local
        self.depth_offset.append(offset)
        self.item_paths = torch.stack(paths, dim=1)  # (num_items, L + 1), root first
        self.num_nodes = offset + num_parents
        self.leaf_count = torch.bincount(self.item_paths.flatten(), minlength=self.num_nodes)
        leaf_item = torch.empty(num_parents, dtype=torch.long)
        leaf_item[parent_local] = torch.arange(self.num_items)
        self.leaf_item = leaf_item  # depth-L local node id -> item index

    @classmethod
    def from_sid_map(cls, sid_map: SidMap, tokenizer, item_ids: Sequence[str] | None = None) -> SidTrie:
        """Trie over `item_ids` (default: every item of the map), in that item order."""
        item_ids = list(item_ids if item_ids is not None else sid_map.item_ids)
        tokens = sid_map.all_tokens()
        token_ids = tokenizer.convert_tokens_to_ids(tokens)
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in token_ids:
            raise ValueError("The tokenizer does not know every SID token; call add_sid_tokens first.")
        vocab = dict(zip(tokens, token_ids))
        rows = [[vocab[token] for token in sid_map[item]] for item in item_ids]
        return cls(torch.tensor(rows, dtype=torch.long), tokenizer.eos_token_id)

    def to(self, device: torch.device | str) -> SidTrie:
        for name in ("sid_token_ids", "item_paths", "leaf_count", "leaf_item"):
            setattr(self, name, getattr(self, name).to(device))
        self.codebook = [t.to(device) for t in self.codebook]
        self.children = [t.to(device) for t in self.children]
        return self

    def root(self, num_rows: int) -> torch.Tensor:
        return torch.zeros(num_rows, dtype=torch.long, device=self.item_paths.device)

    def dead_nodes(self, banned_items: Sequence[Sequence[int]]) -> torch.Tensor:
        """Per row, the nodes all of whose items are banned (padded with -2).

        Banning an item removes it from that row's trie; a prefix whose every
        item is banned must go too, or a beam could enter a dead end.
        """
        rows = []
        for items in banned_items:
            items = torch.as_tensor(sorted(set(items)), dtype=torch.long, device=self.item_paths.device)
            nodes, counts = torch.unique(self.item_paths[items].flatten(), return_counts=True)
            rows.append(nodes[counts == self.leaf_count[nodes]])
        width = max([len(r) for r in rows] + [1])
        dead = torch.full((len(rows), width), -2, dtype=torch.long, device=self.item_paths.device)
        for i, r in enumerate(rows):
            dead[i, : len(r)] = r
        return dead

    def mask_scores(
        self, scores: torch.Tensor, nodes: torch.Tensor, depth: int, dead: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Set every invalid next token to -inf. scores: (R, V); nodes: (R,) ids at `depth`."""
        masked = torch.full_like(scores, float("-inf"))
        if depth == self.sid_length:  # the SID is complete: only <eos>
            masked[:, self.eos_token_id] = scores[:, self.eos_token_id]
            return masked
        children = self.children[depth][nodes - self.depth_offset[depth]]  # (R, C)
        allowed = children >= 0
        if dead is not None:
            allowed &= ~(children.unsqueeze(-1) == dead.unsqueeze(1)).any(-1)
        codebook = self.codebook[depth]
        masked[:, codebook] = torch.where(allowed, scores[:, codebook], float("-inf"))
        return masked

    def advance(self, nodes: torch.Tensor, depth: int, tokens: torch.Tensor) -> torch.Tensor:
        """Follow `tokens` (R,) from `nodes` at `depth`; -1 where the token is not a valid child."""
        codebook = self.codebook[depth]
        position = torch.searchsorted(codebook, tokens.contiguous()).clamp(max=len(codebook) - 1)
        valid = (codebook[position] == tokens) & (nodes >= 0)
        local_nodes = (nodes - self.depth_offset[depth]).clamp(min=0)
        children = self.children[depth][local_nodes, position]
        return torch.where(valid, children, torch.full_like(children, NO_NODE))

    def items_of(self, leaf_nodes: torch.Tensor) -> torch.Tensor:
        """Item index of depth-L nodes (-1 for invalid ones)."""
        local = (leaf_nodes - self.depth_offset[self.sid_length]).clamp(min=0)
        return torch.where(leaf_nodes >= 0, self.leaf_item[local], torch.full_like(leaf_nodes, NO_NODE))


class SidTrieLogitsProcessor(LogitsProcessor):
    """Constrain `model.generate` to valid SIDs followed by <eos>.

    A row's trie state is read from the tokens generated after the prompt,
    located by position (`prompt_length`, the common padded prompt length),
    never by searching for pad or eos: with left padding and pad == eos, that
    search mistakes a padded row for a finished one and drops the constraint.
    Rows may be beams (`batch * num_beams`); `banned_items` is per request.
    """

    def __init__(
        self,
        trie: SidTrie,
        prompt_length: int,
        banned_items: Sequence[Sequence[int]] | None = None,
        num_beams: int = 1,
    ):
        self.trie = trie
        self.prompt_length = prompt_length
        self.dead = None
        if banned_items is not None:
            self.dead = trie.dead_nodes(banned_items).repeat_interleave(num_beams, dim=0)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        depth = generated.shape[1]
        if depth > self.trie.sid_length:  # past <eos>: keep rows finished
            return self.trie.mask_scores(scores, self.trie.root(len(scores)), self.trie.sid_length)
        nodes = self.trie.root(len(scores))
        for step in range(depth):
            nodes = self.trie.advance(nodes, step, generated[:, step])
        dead = None if self.dead is None else self.dead.to(scores.device)
        return self.trie.mask_scores(scores, nodes.clamp(min=self.trie.depth_offset[depth]), depth, dead)
