"""A KV-cache layer that writes each step in place into preallocated buffers instead of concatenating.

transformers' `DynamicLayer` grows by `torch.cat` at every decoding step, which copies the whole cache once
per step: at 128 rows x 90 tokens of SmolLM2-135M that copy was 27% of a CPU step (benchmarks/
generation_roofline.py). `BufferLayer` holds keys and values in buffers [row capacity, heads, column
capacity, head dim] and exposes `keys`/`values` as views of the live block [:rows, :, first:end]. A step
writes one column; capacity grows geometrically, so the copies are amortized. Continuous batching needs two
more operations, both cheaper than a rebuild:
- `select(rows, drop)`: the given rows in order, the first `drop` live columns dropped. When no more rows
  are kept than are live, only the rows whose place changes are copied (finished rows' places are refilled
  from the tail), and dropping columns moves the window's start, copying nothing;
- `append(keys, values)`: rows of another state added below, right-aligned to the live columns (the caller's
  attention mask left-pads them), reusing the free columns before `first` when the newcomer is wider.
Columns outside a row's mask hold finite stale values (buffers start at zero), which attention masks out.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

COLUMN_ALIGN = 64  # column capacity is a multiple of this


def _round_up(n: int, to: int = COLUMN_ALIGN) -> int:
    return -(-n // to) * to


class BufferLayer(DynamicLayer):
    """A `DynamicLayer` whose `update` writes in place (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.buf_k: torch.Tensor | None = None
        self.buf_v: torch.Tensor | None = None
        self.rows = self.first = self.end = 0

    # -------------------------------------------------------------------------------------- storage
    def _allocate(self, rows: int, columns: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (rows, like.shape[1], columns, like.shape[3])
        return (torch.zeros(shape, dtype=like.dtype, device=like.device),
                torch.zeros(shape, dtype=like.dtype, device=like.device))

    def _publish(self) -> None:
        """Point `keys`/`values` at the live block."""
        self.keys = self.buf_k[: self.rows, :, self.first:self.end]
        self.values = self.buf_v[: self.rows, :, self.first:self.end]

    def _reshape(self, rows: int, columns: int, front: int) -> None:
        """Move the live block into new buffers with `rows` x `columns` capacity, `front` free columns
        before it."""
        width = self.end - self.first
        buf_k, buf_v = self._allocate(rows, columns, self.buf_k)
        buf_k[: self.rows, :, front:front + width] = self.keys
        buf_v[: self.rows, :, front:front + width] = self.values
        self.buf_k, self.buf_v, self.first, self.end = buf_k, buf_v, front, front + width

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.rows, self.first, self.end = key_states.shape[0], 0, 0
        # room for the prompt and as many generated tokens again (at least one aligned block)
        self.buf_k, self.buf_v = self._allocate(self.rows, _round_up(2 * key_states.shape[2] + 1), key_states)
        self.is_initialized = True

    # ------------------------------------------------------------------------------------- DynamicLayer
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if key_states.shape[0] != self.rows:
            raise ValueError(f"cache holds {self.rows} rows, update brings {key_states.shape[0]}")
        new = key_states.shape[2]
        if self.end + new > self.buf_k.shape[2]:
            width = self.end - self.first + new
            self._reshape(self.buf_k.shape[0], _round_up(width + width // 2), 0)
        self.buf_k[: self.rows, :, self.end:self.end + new] = key_states
        self.buf_v[: self.rows, :, self.end:self.end + new] = value_states
        self.end += new
        self._publish()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.end - self.first if self.is_initialized else 0

    def reset(self) -> None:
        self.buf_k = self.buf_v = None
        self.rows = self.first = self.end = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): give a negative number of tokens to remove")
        if tokens_to_remove and self.is_initialized:
            self.end = max(self.first, self.end + tokens_to_remove)
            self._publish()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.select(torch.arange(self.rows, device=self.device).repeat_interleave(repeats), 0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.select(indices, 0)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    # --------------------------------------------------------------------------- continuous batching
    def select(self, rows: torch.Tensor, drop: int) -> None:
        """Keep `rows` (indices of live rows, in the new order) and drop the first `drop` live columns."""
        rows = rows.to(self.buf_k.device, torch.long)
        n = rows.numel()
        self.first += drop
        self._publish()
        if n <= self.rows:
            moved = torch.nonzero(rows != torch.arange(n, device=rows.device)).flatten()
            if moved.numel():
                source = rows[moved]
                cols = slice(self.first, self.end)
                self.buf_k[moved, :, cols] = self.buf_k[source, :, cols]
                self.buf_v[moved, :, cols] = self.buf_v[source, :, cols]
            self.rows = n
        else:  # more rows than live ones (a prompt's state copied to its samples): gather into new buffers
            keys, values = self.keys[rows], self.values[rows]
            width = self.end - self.first
            self.buf_k, self.buf_v = self._allocate(n, self.buf_k.shape[2] - self.first, keys)
            self.buf_k[:, :, :width], self.buf_v[:, :, :width] = keys, values
            self.rows, self.first, self.end = n, 0, width
        self._publish()

    def reserve(self, rows: int, width: int) -> None:
        """Room for `rows` live rows and a live block `width` columns wide, so the `append`s that follow (a
        prefill's length groups joined one by one) write into place instead of reallocating at each."""
        live = self.end - self.first
        front = max(width - live, 0)
        if front > self.first or rows > self.buf_k.shape[0]:
            columns = max(self.buf_k.shape[2], _round_up(front + self.buf_k.shape[2] - self.first))
            self._reshape(max(rows, self.buf_k.shape[0]), columns, front)
            self._publish()

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Rows [k, heads, width, dim] added after the live rows, right-aligned to the live columns."""
        k, width = keys.shape[0], keys.shape[2]
        live = self.end - self.first
        rows_needed = self.rows + k
        self.reserve(rows_needed, width)
        if width > live:
            self.first = self.end - width
        self.buf_k[self.rows:rows_needed, :, self.end - width:self.end] = keys
        self.buf_v[self.rows:rows_needed, :, self.end - width:self.end] = values
        self.rows = rows_needed
        self._publish()
