"""Per-step layers on the real steps only: packing a padded batch and unpacking it again.

A padded batch ``(batch, time, d)`` carries steps that no output reads: pooling skips them
and attention masks them as keys. Every layer that treats each step on its own (the linear
layers, LayerNorm, the feed-forward network, dropout, residual sums) can therefore run on the
real steps alone. :class:`PackedRows` gathers them into ``(n_rows, d)`` and scatters them back
into the padded layout, with zeros on padding, where a layer needs whole sequences (the
``time x time`` scores of attention, pooling). In the synthetic corpus a third of every
batch's steps are padding (samples of 8 to 24 steps, batches as long as their longest), so
this saves a third of the per-step work. It is the "unpadding" of variable-length BERT
implementations; the outputs on real steps are those of the padded computation.

Two cases keep a caller from dropping every padded step blindly: the evaluator lets a sample
without any real step attend to its first step (the "empty" key of
:func:`~cormult_lib.correlation.evaluator.attendable`, so that row is kept), and a MulT query
that may see no key at all spreads its weight over padded keys and has its output zeroed
afterwards (``has_key`` of :func:`~cormult_lib.nn.stacked.attention_bias`, packed with it).

Packing pays on the CPU, where that work is the cost. On CUDA (one kernel for the whole padded
batch is cheap, and finding the rows would wait for the GPU) and inside ``torch.compile``,
:meth:`PackedRows.of` returns ``None`` and the layers run on the padded layout, as they do
when no step is padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from cormult_lib.nn.functional import eager_cpu

__all__ = ["PackedRows", "pack", "padded_layout", "unpack"]

_enabled = True  # off inside padded_layout()


@contextmanager
def padded_layout() -> Iterator[None]:
    """Run every layer on the padded layout inside this block (no packing): the computation
    before packing, for comparisons (``tests/test_equivalence.py``,
    ``benchmarks/pretrain_epoch_benchmark.py --compare-padded``). Not thread-safe: it switches
    packing off for the whole process."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


class PackedRows:
    """The rows of a padded ``(batch, time)`` layout that hold a real step in any member.

    Build with :meth:`of`. ``index`` holds the flat positions ``b * time + t`` of the kept
    steps, in order; ``n_rows`` is their number.
    """

    def __init__(self, index: torch.Tensor, batch: int, time: int):
        self.index, self.batch, self.time = index, batch, time
        self.n_rows = index.numel()

    @classmethod
    def of(cls, mask: torch.Tensor) -> PackedRows | None:
        """The real rows of ``mask`` ``(batch, time)`` or ``(count, batch, time)`` bool (a row
        is kept when it is real in any member); ``None`` when packing does not apply: every
        step real, or not on the CPU in eager mode (module docstring)."""
        if not (_enabled and eager_cpu(mask)):
            return None
        real = mask.any(dim=0) if mask.ndim == 3 else mask
        if bool(real.all()):
            return None
        return cls(real.flatten().nonzero().squeeze(1), *real.shape)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., batch, time, d)`` -> ``(..., n_rows, d)``: the kept steps, in order."""
        return x.flatten(-3, -2).index_select(-2, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., n_rows, d)`` -> ``(..., batch, time, d)``, zeros on the steps not kept."""
        padded = x.new_zeros(*x.shape[:-2], self.batch * self.time, x.shape[-1])
        return padded.index_copy(-2, self.index, x).unflatten(-2, (self.batch, self.time))


def pack(x: torch.Tensor, rows: PackedRows | None) -> torch.Tensor:
    """:meth:`PackedRows.pack`, or ``x`` itself when ``rows`` is ``None`` (nothing packed)."""
    return x if rows is None else rows.pack(x)


def unpack(x: torch.Tensor, rows: PackedRows | None) -> torch.Tensor:
    """:meth:`PackedRows.unpack`, or ``x`` itself when ``rows`` is ``None`` (nothing packed)."""
    return x if rows is None else rows.unpack(x)
