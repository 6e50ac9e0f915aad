"""Array type aliases shared by the modeling engines (numpy is the modeling extra's core)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
Int8Array: TypeAlias = npt.NDArray[np.int8]
ComplexArray: TypeAlias = npt.NDArray[np.complex128]

__all__ = ["BoolArray", "ComplexArray", "FloatArray", "Int8Array", "IntArray"]
