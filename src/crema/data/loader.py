"""Whole batches through DataLoader worker processes, handed over in reused shared memory.

A dataset whose items are whole batches (``dataset[key]`` for a list of indices, see
:mod:`crema.data.dataset` and :class:`crema.train.stream.EpochIndexed`) is loaded by
:func:`batch_loader`: a DataLoader with ``batch_size=None`` and persistent workers, each worker
building whole batches, while the main process asks the kernel to read the rows of the batch
after the one being handed out (:class:`Lookahead`). What it adds is the hand-over. A tensor a worker returns normally
travels in a new shared-memory file, created, faulted in page by page and freed again for
every batch, with one file descriptor passed per tensor: on the development machine about
4 ms of CPU for a 3.8 MB batch, more than reading and cropping it. Here each worker keeps a
ring of shared buffers that are reused: a batch's large tensors are copied into the next
buffer of the ring, small ones travel inside the message, and the main process copies the
batch out of the buffer as it receives it (into page-locked memory with ``pin_memory``).

Why a buffer is never overwritten before it is read: the DataLoader hands out tasks round
robin and keeps at most ``prefetch_factor`` of them per worker unreturned, and the main process
copies each batch before asking for the next, so a worker holds at most ``prefetch_factor + 1``
unread batches; its ring has :data:`SPARE_SLOTS` more. Each buffer also carries the number of
the batch written into it, checked after the copy; should it ever differ (a DataLoader that
schedules otherwise), the batch is computed again in the main process, with a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..errors import CremaError

SMALL_BYTES = 64 * 1024  # tensors up to this size travel inside the message
SPARE_SLOTS = 2          # ring buffers per worker beyond its prefetched batches
_ALIGN = 64              # byte alignment of each tensor in a buffer
_HEADER = _ALIGN         # a buffer starts with the number of the batch written into it


class ShuffledBatches(Sampler):
    """Batch keys ``(epoch, indices)`` over ``n`` items, for :func:`batch_loader`.

    Each epoch is a permutation drawn from ``(seed, epoch)`` (``0..n-1`` in order without
    ``shuffle``) cut into batches of ``batch_size``, the last smaller one kept unless
    ``drop_last``. :meth:`set_epoch` chooses the epoch; the keys carry it to the dataset, also in
    persistent DataLoader workers.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if batch_size < 1:
            raise CremaError(f"batch size must be at least 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), shuffle
        self.seed, self.drop_last, self.epoch = int(seed), drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        for b in range(len(self)):
            yield self.epoch, order[b * self.batch_size:(b + 1) * self.batch_size]


def batch_loader(dataset: Dataset, batches, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int = 2) -> BatchLoader:
    """Load ``dataset[key]`` for each key that ``batches`` yields (a :class:`ShuffledBatches`,
    or any sampler of index lists or ``(epoch, indices)``), each item a whole batch (a dict of
    tensors), with ``num_workers`` worker processes (0: in this process).

    Workers build whole batches in parallel, stay alive across epochs and hand them over through
    reused shared memory (see the module docstring); a batch depends only on its key, so any
    ``num_workers`` gives the same batches in the same order. ``pin_memory`` (for CUDA) gives
    page-locked batches that copy to the GPU asynchronously.
    """
    return BatchLoader(dataset, batches, num_workers, pin_memory, prefetch_factor)


class BatchLoader:
    """What :func:`batch_loader` returns: iterate it (once per pass) for the batches."""

    def __init__(self, dataset: Dataset, batches, num_workers: int, pin_memory: bool, prefetch_factor: int):
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory
        self.batches = batches
        if hasattr(dataset, "prefetch"):
            batches = Lookahead(batches, dataset)
        if num_workers == 0:
            self.loader = DataLoader(dataset, sampler=batches, batch_size=None, pin_memory=pin_memory)
        else:
            self.loader = DataLoader(RingDataset(dataset, prefetch_factor + 1 + SPARE_SLOTS), sampler=batches,
                                     batch_size=None, collate_fn=_as_is, num_workers=num_workers,
                                     persistent_workers=True, prefetch_factor=prefetch_factor)
        self._buffers: dict[tuple[int, int], torch.Tensor] = {}  # (worker, slot) -> shared buffer
        self._warned = False

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """The next pass is epoch ``epoch``: its order (the batches' ``set_epoch``) and its
        crops and augmentations (the dataset's; the keys carry it to the workers)."""
        for part in (self.batches, self.dataset):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        # The DataLoader's iterator is made now, not at the first batch: making it draws the
        # workers' base seed from torch's generator, and a resumed run restores that generator
        # right after (crema.train.pretrain).
        batches = iter(self.loader)
        return batches if self.num_workers == 0 else self._received(batches)

    def _received(self, batches: Iterator) -> Iterator[dict]:
        for message in batches:
            yield self.receive(message)

    def receive(self, message: Packed | dict) -> dict:
        """The batch of ``message``, copied out of its worker's ring."""
        if not isinstance(message, Packed):
            return message
        if message.buffer is not None:
            self._buffers[(message.worker, message.slot)] = message.buffer
        buffer = self._buffers[(message.worker, message.slot)]
        batch = {}
        for key in message.order:
            if key in message.small:
                value = message.small[key]
                value = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
                batch[key] = value.pin_memory() if self.pin_memory and torch.is_tensor(value) else value
                continue
            offset, dtype, shape = message.layout[key]
            out = torch.empty(shape, dtype=dtype, pin_memory=self.pin_memory)
            flat = out.view(-1).view(torch.uint8)
            flat.copy_(buffer[offset:offset + flat.numel()])
            batch[key] = out
        if int(buffer[:8].view(torch.int64)[0]) != message.number:
            return self._again(message)
        return batch

    def _again(self, message: Packed) -> dict:
        """A batch whose buffer was overwritten before it was read: computed again here."""
        if not self._warned:
            warnings.warn("a batch was overwritten in shared memory before it was read (the DataLoader "
                          "scheduled more batches per worker than expected); computing it again here")
            self._warned = True
        batch = self.dataset[message.key]
        return {k: v.pin_memory() if self.pin_memory and torch.is_tensor(v) else v for k, v in batch.items()}


class Lookahead(Sampler):
    """``batches`` as they are, with ``dataset.prefetch`` called on each key one key before it
    is handed out: the kernel reads the rows of the next batch while this one is made (in this
    process, which is where the DataLoader draws its keys, or in a worker: the page cache is
    shared). Its length is that of ``batches``."""

    def __init__(self, batches, dataset: Dataset):
        self.batches, self.dataset = batches, dataset

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        keys = iter(self.batches)
        current = next(keys, _END)
        while current is not _END:
            upcoming = next(keys, _END)
            if upcoming is not _END:
                self.dataset.prefetch(upcoming)
            yield current
            current = upcoming


_END = object()


@dataclass
class Packed:
    """A batch as a worker sends it: where its large tensors lie in the worker's ring, the
    small values themselves."""

    worker: int
    slot: int
    number: int                                   # the worker's batch count, also in the buffer
    key: Any                                      # to compute the batch again if need be
    order: list[str]
    layout: dict[str, tuple[int, torch.dtype, tuple[int, ...]]]  # key -> (offset, dtype, shape)
    small: dict[str, Any] = field(default_factory=dict)
    buffer: torch.Tensor | None = None            # the slot's buffer, sent when new


class RingDataset(Dataset):
    """``dataset`` whose batches a worker packs into its ring of ``slots`` shared buffers."""

    def __init__(self, dataset: Dataset, slots: int):
        self.dataset, self.slots = dataset, slots
        self.ring: Ring | None = None  # made in each worker on first use

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> Packed | dict:
        batch = self.dataset[key]
        info = get_worker_info()
        if info is None:
            return batch
        if self.ring is None:
            self.ring = Ring(info.id, self.slots)
        return self.ring.pack(batch, key)


class Ring:
    """One worker's shared buffers, used in turn."""

    def __init__(self, worker: int, slots: int):
        self.worker = worker
        self.buffers: list[torch.Tensor | None] = [None] * slots
        self.count = 0

    def pack(self, batch: dict, key: Any) -> Packed:
        """Copy the large tensors of ``batch`` into the next buffer; a :class:`Packed` message."""
        self.count += 1
        slot = self.count % len(self.buffers)
        large = {k: v for k, v in batch.items() if torch.is_tensor(v)
                 and (v.numel() * v.element_size() > SMALL_BYTES or v.dtype == torch.bfloat16)}  # (no numpy bf16)
        small = {k: v.numpy() if torch.is_tensor(v) else v for k, v in batch.items() if k not in large}
        sizes = {k: -(-v.numel() * v.element_size() // _ALIGN) * _ALIGN for k, v in large.items()}
        needed = _HEADER + sum(sizes.values())
        new = None
        if self.buffers[slot] is None or self.buffers[slot].numel() < needed:
            new = self.buffers[slot] = torch.empty(needed, dtype=torch.uint8).share_memory_()
        buffer = self.buffers[slot]
        number = buffer[:8].view(torch.int64)
        number[0] = -1  # being written
        layout, offset = {}, _HEADER
        for k, value in large.items():
            target = buffer[offset:offset + value.numel() * value.element_size()]
            target.view(value.dtype).view(value.shape).copy_(value)
            layout[k] = (offset, value.dtype, tuple(value.shape))
            offset += sizes[k]
        number[0] = self.count
        return Packed(self.worker, slot, self.count, key, list(batch), layout, small, new)


def _as_is(batch):
    """The collate function of ring loaders: messages are passed on untouched."""
    return batch
