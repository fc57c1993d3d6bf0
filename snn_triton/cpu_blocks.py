"""Eager CPU scans in cache-sized blocks of neurons.

Every neuron's scan is independent of the others', so an eager scan on a CPU can run block by block
of rows: a step is a dozen elementwise ops, and on a block its state stays in the core's L2 cache
from one op to the next instead of streaming the whole layer through memory at every op.
"""

from __future__ import annotations

import functools

import torch

from .compiler import being_compiled

# Neurons per block: 512 KB of float32 state, which fits a core's L2 cache next to a step's
# temporaries (bench/results/cpu_blocks/ has the sweep).
CACHE_BLOCK = 1 << 17


def in_cache_blocks(first_is_sequence: bool):
    """Run the decorated scan block by block of rows, eager on a CPU.

    The arguments are split by rows: the first dim of a state [rows, ...] and the second of a
    sequence [T, rows, ...] (the first argument is one or the other, and tells the rank); the results
    are joined the same way, 0-dim ones (a leak's gradient) summed. Rows are whole samples where a
    layer is [N, C, H, W], so a pooling window never straddles two blocks.

    Args:
        first_is_sequence: whether the scan's first argument is a sequence [T, rows, ...] (else a
            state [rows, ...]).

    Returns:
        A decorator; the decorated scan runs whole under torch.compile, off the CPU, or where the
        layer fits one block.
    """

    def decorate(scan_fn):
        @functools.wraps(scan_fn)
        def blocked(*args, **options):
            first = args[0]
            state_rank = first.dim() - first_is_sequence
            if being_compiled() or first.device.type != "cpu" or state_rank < 1 or first.numel() == 0:
                return scan_fn(*args, **options)
            rows = first.shape[1 if first_is_sequence else 0]

            def split_dim(a):  # the dim a tensor argument is split along, or None
                if not isinstance(a, torch.Tensor) or a.dim() not in (state_rank, state_rank + 1):
                    return None
                dim = a.dim() - state_rank
                return dim if a.shape[dim] == rows else None

            dims = [split_dim(a) for a in args]
            row_size = max(
                (a.numel() if dim == 0 else a[0].numel()) // rows for a, dim in zip(args, dims) if dim is not None
            )
            block = max(1, CACHE_BLOCK // max(row_size, 1))
            if block >= rows:
                return scan_fn(*args, **options)
            results = [
                scan_fn(
                    *(
                        a if dim is None else a.narrow(dim, start, min(block, rows - start))
                        for a, dim in zip(args, dims)
                    ),
                    **options,
                )
                for start in range(0, rows, block)
            ]
            if isinstance(results[0], torch.Tensor):
                return join_blocks(results, state_rank)
            return tuple(join_blocks(list(parts), state_rank) for parts in zip(*results))

        return blocked

    return decorate


def memory_order(x: torch.Tensor) -> list[int]:
    """x's dims in the order they lie in memory, outermost first (the larger first where strides tie)."""
    keys = [(-x.stride(d), -x.shape[d]) for d in range(x.dim())]
    order = []
    for d in range(x.dim()):  # a stable insertion sort: torch 2.11's dynamo cannot trace sorted() with a key
        at = len(order)
        while at > 0 and keys[order[at - 1]] > keys[d]:
            at -= 1
        order.insert(at, d)
    return order


def inverse_order(order: list[int]) -> list[int]:
    """The permutation that undoes ``permute(order)``: x.permute(order).permute(inverse_order(order)) is x."""
    return [order.index(d) for d in range(len(order))]


def join_blocks(blocks: list[torch.Tensor], state_rank: int) -> torch.Tensor:
    """One result of in_cache_blocks' blocks, joined by rows in the memory order the blocks have."""
    first = blocks[0]
    if first.dim() == 0:
        return torch.stack(blocks).sum()
    if first.dim() not in (state_rank, state_rank + 1) or first.numel() == 0:
        return first  # an empty placeholder
    dim = first.dim() - state_rank
    shape = list(first.shape)
    shape[dim] = sum(b.shape[dim] for b in blocks)
    order = memory_order(first)
    out = first.new_empty([shape[d] for d in order]).permute(inverse_order(order))
    start = 0
    for b in blocks:
        out.narrow(dim, start, b.shape[dim]).copy_(b)
        start += b.shape[dim]
    return out
