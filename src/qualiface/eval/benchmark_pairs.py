"""Verification pairs built from identity folders (one subfolder per identity), for ``qualiface eval benchmark
--folders`` (docs/protocols.md, 'Pairs from identity folders').

The pair set, in this order of decisions:

1. **Identities**: the immediate subfolders of the root (hidden ones skipped), sorted by name; an identity's images
   are its image files at any depth (:data:`qualiface.use.IMAGE_SUFFIXES`), sorted by path. Files directly in the
   root belong to no identity and are left out (counted in :attr:`FolderPairs.loose_files`).
2. **Genuine pairs**: every unordered pair of two images of one identity, ``G = Σ n_i (n_i - 1) / 2``. When ``G``
   exceeds the genuine budget, ``max(floor(max_pairs / (1 + impostor_ratio)), max_pairs - I)``, a uniform sample
   without replacement of that size is drawn instead.
3. **Impostor pairs**: ``round(impostor_ratio · genuine)`` pairs (balanced by default: as many as genuine, as in
   LFW's and insightface's verification lists), a uniform sample without replacement of the ``I`` unordered pairs
   of images of two different identities; all of them when ``I`` is not larger (a large ratio takes every impostor
   pair that fits in ``max_pairs``).
4. **Order**: each class is shuffled, then the two are interleaved evenly (pair ``k`` of a class of ``n`` is placed
   at ``(k + 0.5) / n``), so every contiguous block of the 10-fold protocol holds both classes in the set's
   proportion (± 1 pair). Folds are not identity-disjoint: the protocol learns only a threshold on nine folds.

Everything random comes from ``numpy.random.default_rng(seed)``: the same folder and options give the same pairs.
Memory is bounded by the pair budget, whatever the folder holds: small classes are enumerated (at most
``4 · max_pairs`` candidates), large ones sampled directly (an ordered pair ``(i, j)`` is drawn with ``i`` weighted
by its number of partners and ``j`` uniform among them, which makes every unordered pair equally likely; duplicates
are drawn again).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.data.pairs import PairList
from qualiface.errors import InputError

#: Default bound on the number of pairs built from identity folders (genuine + impostor).
DEFAULT_MAX_PAIRS = 100_000
#: A class is enumerated (then sampled) when it has at most this many times the pairs needed; else drawn directly.
_ENUMERATE_FACTOR = 4


@dataclass(frozen=True)
class FolderPairs:
    """The pairs built from identity folders and how they were built (module docstring).

    Attributes:
        pairs: The pair list (paths absolute or as found under ``root``, labels, no fold column).
        root: The folder of identity folders.
        identities: Number of identities with at least one image.
        images: Number of images in those identities.
        loose_files: Image files directly in ``root`` (left out: they belong to no identity).
        genuine_available: Unordered same-identity pairs in the folders.
        impostor_available: Unordered different-identity pairs in the folders.
        impostor_ratio: Impostor pairs requested per genuine pair.
        max_pairs: The bound on genuine + impostor pairs.
        seed: Seed of ``numpy.random.default_rng``.
    """

    pairs: PairList
    root: Path
    identities: int
    images: int
    loose_files: int
    genuine_available: int
    impostor_available: int
    impostor_ratio: float
    max_pairs: int
    seed: int

    def describe(self) -> dict[str, Any]:
        """The construction as plain data (for results.json and the report)."""
        genuine = int(self.pairs.issame.sum())
        return {
            "source": "identity folders",
            "root": str(self.root),
            "identities": self.identities,
            "images_in_folders": self.images,
            "loose_files_ignored": self.loose_files,
            "genuine_pairs": genuine,
            "genuine_available": self.genuine_available,
            "genuine_sampled": genuine < self.genuine_available,
            "impostor_pairs": len(self.pairs) - genuine,
            "impostor_available": self.impostor_available,
            "impostor_ratio": self.impostor_ratio,
            "max_pairs": self.max_pairs,
            "seed": self.seed,
            "rule": "all genuine pairs (uniform sample above the budget); impostors a uniform sample of "
            "round(impostor_ratio x genuine) different-identity pairs; classes shuffled and interleaved evenly",
        }

    def write_csv(self, path: Path, n_folds: int) -> None:
        """Write the pairs as a pairs CSV (``fold,path_a,path_b,same``; paths relative to :attr:`root`), readable
        by ``--pairs PATH --root ROOT``; ``fold`` is the contiguous ``n_folds``-fold split of the rows."""
        from qualiface.eval.verification import contiguous_folds

        folds = contiguous_folds(len(self.pairs), n_folds)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["fold", "path_a", "path_b", "same"])
            for fold, a, b, same in zip(folds, self.pairs.paths_a, self.pairs.paths_b, self.pairs.issame, strict=True):
                writer.writerow([int(fold), _relative(a, self.root), _relative(b, self.root), int(same)])


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _identity_images(root: Path) -> tuple[list[str], list[list[Path]], int]:
    from qualiface.use import IMAGE_SUFFIXES

    if not root.is_dir():
        raise InputError(f"{root}: not a folder (--folders takes a folder with one subfolder per identity)")
    names: list[str] = []
    images: list[list[Path]] = []
    loose = 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                names.append(entry.name)
                images.append(files)
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            loose += 1
    return names, images, loose


def _genuine_all(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    firsts, seconds = [], []
    for start, n in zip(starts.tolist(), counts.tolist(), strict=True):
        if n > 1:
            i, j = np.triu_indices(n, 1)
            firsts.append(i + start)
            seconds.append(j + start)
    return np.concatenate(firsts), np.concatenate(seconds)


def _impostor_all(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    firsts, seconds = [], []
    n_ids = counts.size
    for a in range(n_ids):
        if a + 1 >= n_ids:
            break
        rest = np.arange(starts[a + 1], starts[-1] + counts[-1])  # every image of a later identity
        first = np.arange(starts[a], starts[a] + counts[a])
        firsts.append(np.repeat(first, rest.size))
        seconds.append(np.tile(rest, first.size))
    return np.concatenate(firsts), np.concatenate(seconds)


def _draw(
    starts: np.ndarray, counts: np.ndarray, k: int, *, same: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct unordered pairs drawn uniformly among the same-identity (``same``) or different-identity
    pairs, without enumerating them (module docstring)."""
    n = int(counts.sum())
    identity = np.repeat(np.arange(counts.size), counts)
    partners = (counts[identity] - 1) if same else (n - counts[identity])
    weights = partners / partners.sum()
    codes: np.ndarray = np.zeros(0, dtype=np.int64)
    while codes.size < k:
        batch = max(2 * (k - codes.size), 1024)
        i = rng.choice(n, size=batch, p=weights)
        offset = rng.integers(0, partners[i])  # the partner's position among i's partners
        start, size = starts[identity[i]], counts[identity[i]]
        # same: skip i itself inside its identity; else: skip i's identity among all images
        j = start + offset + (offset >= i - start) if same else offset + np.where(offset >= start, size, 0)
        new = np.minimum(i, j) * n + np.maximum(i, j)
        _, first = np.unique(np.concatenate([codes, new]), return_index=True)
        codes = np.concatenate([codes, new])[np.sort(first)]  # keep the order of first draw
    codes = codes[:k]
    return codes // n, codes % n


def _choose(
    starts: np.ndarray, counts: np.ndarray, k: int, available: int, *, same: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if available <= _ENUMERATE_FACTOR * k:
        first, second = _genuine_all(starts, counts) if same else _impostor_all(starts, counts)
        pick = rng.choice(first.size, size=k, replace=False) if k < first.size else rng.permutation(first.size)
        return first[pick], second[pick]
    first, second = _draw(starts, counts, k, same=same, rng=rng)
    return first, second


def _interleave(n_genuine: int, n_impostor: int) -> np.ndarray:
    """Row order of the concatenated (genuine, impostor) pairs that spreads both classes evenly."""
    keys = np.concatenate(
        [(np.arange(n_genuine) + 0.5) / max(n_genuine, 1), (np.arange(n_impostor) + 0.5) / max(n_impostor, 1)]
    )
    return np.argsort(keys, kind="stable")


def identity_folder_pairs(
    root: str | Path,
    *,
    impostor_ratio: float = 1.0,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
) -> FolderPairs:
    """Genuine and impostor pairs of the images in ``root``'s identity subfolders (module docstring).

    Args:
        root: A folder with one subfolder per identity.
        impostor_ratio: Impostor pairs per genuine pair (1: balanced); all impostor pairs when fewer exist.
        max_pairs: Bound on genuine + impostor pairs; genuine pairs are sampled when all of them would exceed
            ``floor(max_pairs / (1 + impostor_ratio))``.
        seed: Seed of every random choice.

    Raises:
        InputError: ``root`` is not a folder, has fewer than two identities with images or no identity with two
            images, or an option is out of range.
    """
    root = Path(root)
    if not (np.isfinite(impostor_ratio) and impostor_ratio > 0):
        raise InputError(f"--impostor-ratio: must be > 0, got {impostor_ratio}")
    if max_pairs < 2:
        raise InputError(f"--max-pairs: must be >= 2, got {max_pairs}")
    names, images, loose = _identity_images(root)
    if len(names) < 2:
        raise InputError(
            f"{root}: {len(names)} identity folder(s) with images; --folders needs a folder with one subfolder "
            f"per identity (at least two)"
        )
    counts = np.array([len(files) for files in images], dtype=np.int64)
    if counts.max() < 2:
        raise InputError(f"{root}: no identity folder has two images, so there is no genuine pair")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n = int(counts.sum())
    genuine_available = int(sum(c * (c - 1) // 2 for c in counts.tolist()))
    impostor_available = n * (n - 1) // 2 - genuine_available
    rng = np.random.default_rng(seed)
    # the genuine budget grows into what the impostors cannot fill
    budget = max(1, int(max_pairs // (1 + impostor_ratio)), max_pairs - impostor_available)
    n_genuine = min(genuine_available, budget)
    n_impostor = min(impostor_available, max(1, round(impostor_ratio * n_genuine)), max_pairs - n_genuine)
    ga, gb = _choose(starts, counts, n_genuine, genuine_available, same=True, rng=rng)
    ia, ib = _choose(starts, counts, n_impostor, impostor_available, same=False, rng=rng)
    ga, gb = ga[order := rng.permutation(ga.size)], gb[order]
    ia, ib = ia[order := rng.permutation(ia.size)], ib[order]
    rows = _interleave(ga.size, ia.size)
    first = np.concatenate([ga, ia])[rows]
    second = np.concatenate([gb, ib])[rows]
    issame = np.concatenate([np.ones(ga.size, bool), np.zeros(ia.size, bool)])[rows]
    flat = [path for files in images for path in files]
    pairs = PairList(
        paths_a=[flat[i] for i in first.tolist()],
        paths_b=[flat[j] for j in second.tolist()],
        issame=issame,
        folds=None,
        source=str(root),
    )
    return FolderPairs(
        pairs=pairs,
        root=root,
        identities=len(names),
        images=n,
        loose_files=loose,
        genuine_available=genuine_available,
        impostor_available=impostor_available,
        impostor_ratio=float(impostor_ratio),
        max_pairs=int(max_pairs),
        seed=int(seed),
    )
