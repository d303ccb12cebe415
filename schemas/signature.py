"""What a model accepts and returns, in wire terms (OIP datatypes, shapes with -1 for any size)."""

from __future__ import annotations

import msgspec


class TensorSpec(msgspec.Struct, frozen=True):
    name: str
    datatype: str
    #: Full shape including the batch dimension; -1 marks a dimension of any size.
    shape: tuple[int, ...]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row: everything after the batch dimension."""
        return self.shape[1:]


class Signature(msgspec.Struct, frozen=True):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
