"""Tensor shapes as models declare them: static, fully dynamic (-1) or bounded ([a~b]) dims."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .dtypes import DType


@dataclass(frozen=True)
class Dim:
    """One dimension of a model's tensor: any size in [low, high]; high None means unbounded."""

    low: int = 0
    high: int | None = None

    @classmethod
    def static(cls, size: int) -> Dim:
        return cls(size, size)

    @classmethod
    def dynamic(cls) -> Dim:
        return cls(0, None)

    @property
    def is_static(self) -> bool:
        return self.high is not None and self.low == self.high

    @property
    def is_dynamic(self) -> bool:
        return self.low == 0 and self.high is None

    def accepts(self, size: int) -> bool:
        return size >= self.low and (self.high is None or size <= self.high)

    @property
    def metadata_size(self) -> int:
        """The size reported in metadata: the static value, or -1 for anything else."""
        return self.low if self.is_static else -1

    def __str__(self) -> str:
        # OVMS's Dimension::toString: "3", "-1" or "[1~8]"
        if self.is_static:
            return str(self.low)
        if self.is_dynamic:
            return "-1"
        return f"[{self.low}~{self.high if self.high is not None else -1}]"


DimLike = int | Dim | tuple[int, int]


def dim(value: DimLike) -> Dim:
    """A Dim from an int (-1 is dynamic), a (low, high) pair or a Dim."""
    if isinstance(value, Dim):
        return value
    if isinstance(value, tuple):
        low, high = value
        return Dim(max(low, 0), None if high < 0 else high)
    if value < 0:
        return Dim.dynamic()
    return Dim.static(int(value))


def format_shape(dims: Iterable[object]) -> str:
    """A shape as OVMS prints it in messages: (1,3,224,224)."""
    return "(" + ",".join(str(d) for d in dims) + ")"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its name, element type, shape and (optional) layout.

    `layout` has one letter per dim, as OpenVINO names them: "NCHW", "NHWC"; "?" marks a dim
    with no name ("?CHW") and "..." any number of unnamed dims ("N..." says only that the batch
    is dim 0). None when the model does not say. Only the "N" is used (`batch_index`).
    """

    name: str
    dtype: DType
    shape: tuple[Dim, ...]
    layout: str | None = None

    @classmethod
    def of(cls, name: str, dtype: DType, shape: Sequence[DimLike], layout: str | None = None) -> TensorSpec:
        """Build a spec from plain values: `TensorSpec.of("x", DType.FP32, [-1, 64])`."""
        return cls(name, dtype, tuple(dim(d) for d in shape), layout)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batch_index(self) -> int | None:
        """Where the batch dim is: the layout's N, or dim 0 when the layout is unknown (OVMS's "N...")."""
        if self.layout:
            index = self.layout.upper().find("N")
            return index if index >= 0 else None
        return 0 if self.shape else None

    def shape_text(self) -> str:
        return format_shape(self.shape)
