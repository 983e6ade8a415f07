"""Array aliases shared by every layer, defined once."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["BoolArray", "FloatArray", "IntArray"]

#: Rows, vectors and matrices of float64 values.
FloatArray = NDArray[np.float64]
#: Masks (holdout rows, missing cells).
BoolArray = NDArray[np.bool_]
#: Class predictions and indices.
IntArray = NDArray[np.int64]
