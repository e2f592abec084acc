"""Image-grouped sample order (HRPOSE.GROUP_BY_IMAGE, opt-in): each image is decoded once for all its people.

Every epoch shuffles the *images* (a `torch.Generator` seeded with ``seed + epoch``, as `DistributedSampler`
seeds its permutation) and yields the people of each image one after another, in record order, so every
record is still seen exactly once per epoch; only the order of the samples changes, never their pixels or
targets (the per-item augmentation is seeded by the record index, not by the position). A DataLoader batch
goes to one worker whole, and `PoseDataset` keeps the last decoded image (a one-entry cache keyed by the file),
so a batch decodes each of its images once instead of once per person.

Distributed (``num_replicas`` > 1): the grouped order is padded by repeating its start (as
`DistributedSampler` does) to a multiple of the number of ranks, or cut to one when ``drop_last``, and each
rank takes one contiguous slice of it: the shares are disjoint slices of the same list and equally long, so
every rank runs the same number of batches, and a group is split only where a slice ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def image_groups(images: Sequence[str]) -> list[list[int]]:
    """Record indices grouped by image file, groups in order of first appearance, records in index order."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(images):
        groups.setdefault(str(path), []).append(i)
    return list(groups.values())


class ImageGroupedSampler(Sampler[int]):
    """Record indices, the people of one image consecutively, images shuffled per epoch (see the module
    docstring). ``images``: the image file of each record (``[r.image for r in dataset.records]``)."""

    def __init__(
        self,
        images: Sequence[str],
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas}) (num_replicas {num_replicas})")
        self.groups = image_groups(images)
        self.total = len(images)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.total // self.num_replicas
        else:
            self.num_samples = math.ceil(self.total / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        """This epoch's grouped order of all records (before the split between ranks)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            perm = torch.randperm(len(self.groups), generator=g).tolist()
        else:
            perm = list(range(len(self.groups)))
        return [i for k in perm for i in self.groups[k]]

    def __iter__(self) -> Iterator[int]:
        indices = self.order()
        size = self.num_samples * self.num_replicas
        if size > len(indices):  # pad with the start of the order, as DistributedSampler does
            reps = math.ceil(size / max(len(indices), 1))
            indices = (indices * reps)[:size]
        else:
            indices = indices[:size]
        start = self.rank * self.num_samples
        return iter(indices[start : start + self.num_samples])

    def __len__(self) -> int:
        return self.num_samples
