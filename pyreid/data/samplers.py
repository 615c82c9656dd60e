"""Batch samplers for metric learning: P identities x K instances per batch.

Triplet and contrastive losses need several images of each identity in a
batch, which uniform shuffling does not give. Both samplers here yield
``iters * batch_size`` indices per epoch, ``batch_size = P * K`` at a time:

* :class:`RandomIdentitySampler` (the PK sampler of "In Defense of the Triplet
  Loss", Hermans et al. 2017): P distinct identities, K of each one's images.
  Identities are taken from a reshuffled queue, so over an epoch every
  identity is drawn about equally often whatever its image count.
* :class:`CameraAwareIdentitySampler` (pyreid's form of Cluster-Contrast's
  ``RandomMultipleGallerySampler`` idea): the first instance of an identity is
  a random anchor, the other K - 1 are drawn from its images taken by *other*
  cameras, so positives cross cameras, which is what re-ID must learn.
* :class:`PublishedCameraAwareSampler`: Cluster-Contrast's
  ``RandomMultipleGallerySampler`` rule exactly as the published code runs it
  (passes over a permutation of the identities, repeats whenever an identity
  has fewer than K other-camera images, each pass's incomplete last batch
  dropped). The two differ in when they repeat images and in batch
  boundaries, which pyreid's issue 25 names as one of two causes of a
  measured gap between the published trainer and pyreid's (config key
  ``sampler: published|pyreid``).

For classification alone (PUL's published fine-tuning) :class:`RandomImageSampler`
shuffles the images instead, so large clusters are drawn as often as they
have images.

"Iteration-based" training (Cluster-Contrast, SpCL) runs a fixed number of
iterations per epoch rather than one pass over the data, because in
unsupervised training the number of pseudo-identities changes every epoch.

Both are deterministic: epoch ``e`` of a sampler built with ``seed`` always
yields the same indices (``set_epoch`` picks the epoch; otherwise each
``iter()`` moves on to the next one).

Under ``torch.distributed`` each of ``world_size`` processes builds the same
sampler with its ``rank``: all draw the same global batches from the shared
seed, and rank r yields the r-th of ``world_size`` equal slices of each (whole
identities: P / world_size of them x K), so the global batch is what one
process would have drawn.

Example:
    >>> items = [("a.jpg", 0, 0), ("b.jpg", 0, 1), ("c.jpg", 1, 0), ("d.jpg", 1, 1)]
    >>> sampler = RandomIdentitySampler(items, batch_size=4, num_instances=2, iters=3, seed=0)
    >>> len(sampler), len(list(sampler))
    (12, 12)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Dict, List, Tuple

import numpy as np
from torch.utils.data import Sampler

__all__ = ["RandomIdentitySampler", "CameraAwareIdentitySampler", "PublishedCameraAwareSampler", "RandomImageSampler",
           "SAMPLERS"]

# The ``sampler`` config key: pyreid's P x K samplers, or Cluster-Contrast's published rule.
SAMPLERS = ("pyreid", "published")


def _take(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct members of pool in random order; if pool is smaller, all of it plus random repeats."""
    if len(pool) >= n:
        return rng.choice(pool, n, replace=False)
    return np.concatenate([rng.permutation(pool), rng.choice(pool, n - len(pool), replace=True)])


class RandomIdentitySampler(Sampler[int]):
    """P identities x K instances per batch, ``iters`` batches per epoch.

    Args:
        items: the data set's ``(img_path, pid, camid)`` list (pseudo labels
            in unsupervised training; items with pid < 0, i.e. clustering
            outliers, are never sampled).
        batch_size: P * K; must be a multiple of ``num_instances``.
        num_instances: K, images per identity. An identity with fewer than K
            images contributes all of them plus random repeats (with
            replacement); one with more contributes K distinct ones.
        iters: batches per epoch, so ``len(sampler) == iters * batch_size / world_size``.
        seed: with the epoch number, fixes every index drawn.
        rank, world_size: this process's share of each global batch (see the
            module docstring); P must be a multiple of ``world_size``.
    """

    def __init__(self, items: Sequence[Tuple[str, int, int]], batch_size: int, num_instances: int,
                 iters: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of num_instances ({num_instances})"
            )
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank}, world_size {world_size}")
        if (batch_size // num_instances) % world_size:
            raise ValueError(
                f"the {batch_size // num_instances} identities of a batch (batch_size {batch_size} / num_instances "
                f"{num_instances}) must split evenly across {world_size} processes"
            )
        self.rank, self.world_size = rank, world_size
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.iters = iters
        self.seed = seed
        self.epoch = 0
        by_pid: Dict[int, List[int]] = defaultdict(list)
        self.camids = np.array([camid for _, _, camid in items], dtype=np.int64)
        for index, (_, pid, _) in enumerate(items):
            if pid >= 0:
                by_pid[pid].append(index)
        self.pids = sorted(by_pid)
        self.index_by_pid = {pid: np.array(by_pid[pid], dtype=np.int64) for pid in self.pids}
        if len(self.pids) < self.num_pids_per_batch:
            raise ValueError(
                f"a batch needs {self.num_pids_per_batch} distinct identities "
                f"(batch_size {batch_size} / num_instances {num_instances}), the data have {len(self.pids)}"
            )

    def __len__(self) -> int:
        return self.iters * self.batch_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` yield epoch ``epoch``'s indices."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        queue: List[int] = []
        share = self.num_pids_per_batch // self.world_size
        for _ in range(self.iters):
            # Every rank draws the whole batch (same generator state), then keeps its slice.
            batch = [self._instances(self.index_by_pid[pid], rng) for pid in self._draw_identities(queue, rng)]
            for instances in batch[self.rank * share:(self.rank + 1) * share]:
                yield from instances.tolist()

    def _draw_identities(self, queue: List[int], rng: np.random.Generator) -> List[int]:
        """P distinct identities from the front of a queue refilled with fresh permutations."""
        chosen: List[int] = []
        deferred: List[int] = []
        while len(chosen) < self.num_pids_per_batch:
            if not queue:
                queue.extend(self.pids[i] for i in rng.permutation(len(self.pids)))
            pid = queue.pop()
            (deferred if pid in chosen else chosen).append(pid)
        queue.extend(deferred)  # seen twice across a refill: keep it for the next batch
        return chosen

    def _instances(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _take(indices, self.num_instances, rng)


class CameraAwareIdentitySampler(RandomIdentitySampler):
    """The PK sampler whose positives come from other cameras than the anchor's.

    For each chosen identity: a random anchor image, then K - 1 images of the
    same identity taken by other cameras (without replacement when there are
    at least K - 1, else all of them plus random repeats). Only when the
    identity was seen by the anchor's camera alone do the K - 1 come from that
    camera, and an identity with a single image repeats it; every batch holds
    P distinct identities. Cluster-Contrast's ``RandomMultipleGallerySampler``
    has the same idea with other rules (repeats below K, single images alone,
    batches cut from passes): :class:`PublishedCameraAwareSampler`. Arguments
    as :class:`RandomIdentitySampler`.
    """

    def _instances(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = self.num_instances
        anchor = indices[rng.integers(len(indices))]
        if k == 1:
            return np.array([anchor])
        others = indices[indices != anchor]
        other_cams = others[self.camids[others] != self.camids[anchor]]
        pool = other_cams if len(other_cams) else others
        if len(pool) == 0:
            pool = np.array([anchor])
        return np.concatenate([[anchor], _take(pool, k - 1, rng)])


class PublishedCameraAwareSampler(Sampler[int]):
    """Cluster-Contrast's ``RandomMultipleGallerySampler`` rule, batched as its training loop batches it.

    One *pass* visits every identity once, in a random order; for each:

    * an anchor drawn uniformly from its images;
    * if it has images from other cameras than the anchor's (m of them):
      K - 1 of those, **without** replacement when m >= K and **with**
      replacement when m < K (so an identity with fewer than K other-camera
      images may repeat some, even when m = K - 1 would have sufficed);
    * otherwise, if it has other images (all from the anchor's camera, n of
      them): K - 1 of those by the same rule (with replacement when n < K);
    * otherwise (a single image) the anchor alone.

    The pass is cut into batches of ``batch_size`` and its incomplete last
    batch dropped (the published ``DataLoader(..., drop_last=True)``); the next
    pass starts a new permutation. Batches are consecutive runs of that
    stream, so an identity's group may straddle two batches when a
    single-image identity has shifted the alignment, as in the published
    code. An epoch is ``iters`` batches taken from successive passes (the
    published ``IterLoader``). Under torch.distributed rank r yields the r-th
    of ``world_size`` contiguous slices of each batch (as DataParallel
    scatters it).

    Arguments as :class:`RandomIdentitySampler`; items with pid < 0 are never
    drawn. Deterministic in ``seed`` and the epoch.
    """

    def __init__(self, items: Sequence[Tuple[str, int, int]], batch_size: int, num_instances: int,
                 iters: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if num_instances < 1 or batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) and num_instances ({num_instances}) must be >= 1")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(f"batch_size ({batch_size}) must split evenly across {world_size} processes "
                             f"(rank {rank})")
        self.batch_size, self.num_instances, self.iters, self.seed = batch_size, num_instances, iters, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.camids = np.array([camid for _, _, camid in items], dtype=np.int64)
        by_pid: Dict[int, List[int]] = defaultdict(list)
        for index, (_, pid, _) in enumerate(items):
            if pid >= 0:
                by_pid[pid].append(index)
        self.pids = sorted(by_pid)
        self.index_by_pid = {pid: np.array(by_pid[pid], dtype=np.int64) for pid in self.pids}
        if not self.pids:
            raise ValueError("PublishedCameraAwareSampler: no labelled image to draw (every pid < 0)")

    def __len__(self) -> int:
        return self.iters * self.batch_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def group(self, pid: int, rng: np.random.Generator) -> np.ndarray:
        """One identity's images in a pass: its anchor first (see the class docstring)."""
        indices = self.index_by_pid[pid]
        anchor = indices[rng.integers(len(indices))]
        k = self.num_instances
        pool = indices[self.camids[indices] != self.camids[anchor]]
        if len(pool) == 0:
            pool = indices[indices != anchor]
        if len(pool) == 0 or k == 1:
            return np.array([anchor])
        return np.concatenate([[anchor], rng.choice(pool, k - 1, replace=len(pool) < k)])

    def one_pass(self, rng: np.random.Generator) -> np.ndarray:
        """The indices of one pass over the identities, incomplete last batch dropped."""
        stream = np.concatenate([self.group(self.pids[i], rng) for i in rng.permutation(len(self.pids))])
        usable = len(stream) // self.batch_size * self.batch_size
        if usable == 0:
            raise ValueError(f"PublishedCameraAwareSampler: a pass over the {len(self.pids)} identities gives "
                             f"{len(stream)} images, not one batch of {self.batch_size}; lower batch_size")
        return stream[:usable]

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, 3])
        self.epoch += 1
        needed = self.iters * self.batch_size
        passes, total = [], 0
        while total < needed:
            passes.append(self.one_pass(rng))
            total += len(passes[-1])
        share = self.batch_size // self.world_size
        for batch in np.concatenate(passes)[:needed].reshape(self.iters, self.batch_size):
            yield from batch[self.rank * share:(self.rank + 1) * share].tolist()


class RandomImageSampler(Sampler[int]):
    """Uniformly shuffled images (items with pid < 0 never drawn), ``iters`` batches per epoch.

    The indices are consecutive random permutations of the images, cut into
    batches of ``batch_size``; deterministic in ``seed`` and the epoch like the
    PK samplers, and under torch.distributed rank r yields the r-th slice of
    every global batch. ``num_instances`` is accepted and ignored, so the
    loader builds it like the others.
    """

    def __init__(self, items: Sequence[Tuple[str, int, int]], batch_size: int, num_instances: int = 1,
                 iters: int = 1, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or iters < 1:
            raise ValueError(f"batch_size and iters must be >= 1, got {batch_size} and {iters}")
        if world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(f"batch_size ({batch_size}) must split evenly across {world_size} processes "
                             f"(rank {rank})")
        self.indices = np.array([i for i, (_, pid, _) in enumerate(items) if pid >= 0], dtype=np.int64)
        if len(self.indices) == 0:
            raise ValueError("RandomImageSampler: no labelled image to draw (every pid < 0)")
        self.batch_size, self.iters, self.seed = batch_size, iters, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        return self.iters * self.batch_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, 2])
        self.epoch += 1
        needed = self.iters * self.batch_size
        order = np.concatenate([rng.permutation(self.indices) for _ in range(-(-needed // len(self.indices)))])
        share = self.batch_size // self.world_size
        for batch in order[:needed].reshape(self.iters, self.batch_size):
            yield from batch[self.rank * share:(self.rank + 1) * share].tolist()
