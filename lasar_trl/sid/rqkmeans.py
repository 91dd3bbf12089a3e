"""Residual k-means (RQ-KMeans): item embeddings -> codebook indices.

Pure torch, vectorised over points. Determinism: every random draw goes through a
`torch.Generator` seeded by the caller, ties in nearest-centroid search go to the lowest
centroid index, and centroid sums accumulate in float64 with `index_add_` (a sequential
reduction on CPU). Distances use one float32 matmul per iteration, so results are
bit-identical for a fixed seed on the same machine and thread count.

Balanced k-means (`balanced=True`) caps every cluster at ceil(n / k) items. Standard
k-means on the residuals of a large codebook puts most items under a few near-origin
centroids (docs/sids.md says why); the cap forces every code to carry a share of the items.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _nearest(points: Tensor, point_norms: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distance to, and index of, each point's nearest centroid: (m,), (m,).

    points (m, d), point_norms (m,) = ||points||^2 (constant, so computed once), centroids (k, d).
    """
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: one (m, k) matmul instead of an (m, k, d) tensor;
    # ||x||^2 does not change the argmin, so it is added after the min.
    partial = torch.addmm(centroids.square().sum(1), points, centroids.T, alpha=-2)  # (m, k)
    min_partial, assignment = partial.min(dim=1)
    return (min_partial + point_norms).clamp_min(0), assignment


def _kmeans_plus_plus(
    points: Tensor, point_norms: Tensor, weights: Tensor, k: int, generator: torch.Generator
) -> Tensor:
    """Greedy k-means++ seeds among distinct `points` (m, d) of multiplicity `weights` (m,): indices (k,).

    Each step draws 2 + ln(k) candidates by D^2 sampling and keeps the one that lowers the
    total squared distance most (Arthur & Vassilvitskii 2007, sec. 6; scikit-learn's
    default). Plain D^2 sampling favours outliers; on real item embeddings this variant
    gave about a fifth fewer SID collisions.
    """
    m = points.shape[0]
    trials = 2 + int(math.log(k))
    chosen = torch.zeros(m, dtype=torch.bool)
    first = torch.multinomial(weights, 1, generator=generator)
    indices = [first]
    chosen[first] = True
    min_dist = _nearest(points, point_norms, points[first])[0]  # (m,)
    for _ in range(1, k):
        # Chosen points are excluded explicitly: the matmul form of the distance leaves
        # rounding noise instead of an exact zero.
        mass = torch.where(chosen, 0.0, min_dist * weights)
        if mass.sum() > 0:
            candidates = torch.multinomial(mass, trials, replacement=True, generator=generator)
        else:  # every point left coincides numerically with a centre: take the first unused
            candidates = (~chosen).nonzero()[0]
        to_candidates = torch.addmm(
            point_norms[:, None] + point_norms[candidates], points, points[candidates].T, alpha=-2
        ).clamp_min(0)  # (m, trials)
        new_min_dist = torch.minimum(min_dist[:, None], to_candidates)
        best = (new_min_dist * weights[:, None]).sum(0).argmin()
        indices.append(candidates[best : best + 1])
        chosen[candidates[best]] = True
        min_dist = new_min_dist[:, best]
    return torch.cat(indices)


def balanced_assignment(distances: Tensor, weights: Tensor, capacity: int) -> Tensor:
    """Nearest-centroid assignment under a cap of `capacity` items per centroid: (m,) long.

    distances (m, k) from each distinct point to each centroid; weights (m,) long, how many
    identical items a point stands for (they move together). In rounds, every unplaced point
    proposes to its nearest centroid with room for it and each centroid accepts its closest
    proposers that fit, so a point settles for a farther centroid only when nearer ones are
    full. A point of more identical items than the cap needs, and fills, an untouched
    centroid; one that fits nowhere once rooms are fragmented goes to its nearest centroid
    past the cap. Ties go to the lower centroid, then the lower point index. When no
    centroid would exceed the cap this is the plain nearest-centroid assignment.
    """
    m, k = distances.shape
    weights = weights.clamp_max(capacity)
    room = torch.full((k,), capacity, dtype=torch.long)
    assignment = torch.full((m,), -1, dtype=torch.long)
    while True:
        fits = (assignment < 0)[:, None] & (room >= weights[:, None])  # (m, k)
        proposers = fits.any(1).nonzero().squeeze(1)
        if proposers.numel() == 0:
            break
        choice = torch.where(fits[proposers], distances[proposers], math.inf).argmin(1)
        # Group the proposers by centroid, closest first; stable sorts keep point order on ties.
        order = torch.sort(distances[proposers, choice], stable=True).indices
        order = order[torch.sort(choice[order], stable=True).indices]
        proposers, choice = proposers[order], choice[order]
        load = weights[proposers].cumsum(0)
        counts = torch.unique_consecutive(choice, return_counts=True)[1]
        starts = counts.cumsum(0) - counts
        load_before_group = (load - weights[proposers])[starts].repeat_interleave(counts)
        # The closest proposer always fits (it chose a centroid with room), so every round places one.
        accepted = load - load_before_group <= room[choice]
        assignment[proposers[accepted]] = choice[accepted]
        room -= torch.zeros(k, dtype=torch.long).index_add_(0, choice[accepted], weights[proposers[accepted]])
    unplaced = assignment < 0
    assignment[unplaced] = distances[unplaced].argmin(1)
    return assignment


def _assign(
    points: Tensor, point_norms: Tensor, counts: Tensor, centroids: Tensor, capacity: int | None
) -> tuple[Tensor, Tensor]:
    """Squared distance to, and index of, each point's centroid: nearest, or balanced under `capacity`."""
    if capacity is None:
        return _nearest(points, point_norms, centroids)
    distances = torch.addmm(point_norms[:, None] + centroids.square().sum(1), points, centroids.T, alpha=-2).clamp_min(
        0
    )  # (m, k)
    assignment = balanced_assignment(distances, counts, capacity)
    return distances.gather(1, assignment[:, None]).squeeze(1), assignment


def kmeans(x: Tensor, k: int, *, iters: int = 50, seed: int, balanced: bool = False) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with greedy k-means++ seeding; `balanced` caps clusters at ceil(n / k') items.

    x: (n, d) float. Returns centroids (k', d) in x's dtype and assignment (n,) long, where
    k' = min(k, number of distinct rows of x): duplicates are clustered once, with weights,
    so identical items always share a code (even past the cap) and k never exceeds what the
    data can fill. A cluster that empties is re-seeded on the point farthest from its
    centroid (ties to the lower point index). Stops early once assignments no longer change;
    the balanced assignment is greedy, so it may instead cycle until `iters`.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty (n, d) tensor, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"kmeans needs k >= 1, got {k}")
    points, inverse, counts = torch.unique(x.float(), dim=0, return_inverse=True, return_counts=True)
    weights = counts.float()  # exact up to 2^24 copies of a point
    point_norms = points.square().sum(1)
    weighted_points = points.double() * counts[:, None]  # (m, d) float64 for the centroid sums
    k = min(k, points.shape[0])
    capacity = math.ceil(x.shape[0] / k) if balanced else None
    generator = torch.Generator().manual_seed(seed)
    centroids = points[_kmeans_plus_plus(points, point_norms, weights, k, generator)]

    assignment = None
    for _ in range(iters):
        min_dist, new_assignment = _assign(points, point_norms, counts, centroids, capacity)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        sums = torch.zeros(k, points.shape[1], dtype=torch.float64)
        sums.index_add_(0, assignment, weighted_points)
        mass = torch.zeros(k, dtype=torch.float64).index_add_(0, assignment, counts.double())
        filled = mass > 0
        means = sums / mass.clamp_min(1)[:, None]
        centroids = torch.where(filled[:, None], means, centroids.double()).float()
        empty = (~filled).nonzero().squeeze(1)
        if empty.numel():
            farthest = torch.sort(min_dist, descending=True, stable=True).indices[: empty.numel()]
            centroids[empty] = points[farthest]
    # After a converged break this equals `assignment`; after the last iteration it matches
    # the final centroids.
    assignment = _assign(points, point_norms, counts, centroids, capacity)[1]
    return centroids.to(x.dtype), assignment[inverse]


def auto_codebook_size(num_items: int, levels: int, leaves_per_item: int = 16) -> int:
    """Smallest power of two k >= 2 with k ** levels >= leaves_per_item * num_items.

    Enough code tuples that evenly spread items would rarely share one (1 - exp(-1/16), 6%),
    as real codes are clumpier and the largest shared tuple must fit the disambiguation
    level's k codes; and no more, so every code keeps many items to learn it from and the
    first level leaves the next ones clusters to split (docs/sids.md).
    """
    if num_items < 1 or levels < 1:
        raise ValueError(f"auto_codebook_size needs num_items >= 1 and levels >= 1, got {num_items}, {levels}")
    size = 2
    while size**levels < leaves_per_item * num_items:
        size *= 2
    return size


def residual_kmeans(
    x: Tensor,
    levels: int = 3,
    codebook_size: int = 256,
    *,
    seed: int = 0,
    iters: int = 50,
    balanced: bool = False,
) -> Tensor:
    """Residual quantisation: level l clusters what levels < l left unexplained.

    x: (n, d) item embeddings. Returns codes (n, levels) long; level l uses seed + l. Codes
    at a level stay below `codebook_size` (fewer are used when the residuals have fewer
    distinct rows). `balanced`: every level uses balanced k-means.
    """
    residual = x.float()
    codes = []
    for level in range(levels):
        centroids, assignment = kmeans(residual, codebook_size, iters=iters, seed=seed + level, balanced=balanced)
        codes.append(assignment)
        residual = residual - centroids[assignment]
    return torch.stack(codes, dim=1)
