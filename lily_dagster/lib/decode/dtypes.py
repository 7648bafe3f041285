"""What a column's dtype means to the decoder: the dtype Python would see, whether its values
are written here exactly as json.dumps writes them, and the floats it prints otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType as DType
else:
    DType = Any

INTS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def normal(dtype: DType) -> DType:
    """Categorical/Enum read as strings, Float32 as the Float64 Python sees, arrays as lists."""
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return pl.String()
    if dtype == pl.Float32:
        return pl.Float64()
    if isinstance(dtype, (pl.Array, pl.List)):
        return pl.List(normal(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return pl.Struct([pl.Field(f.name, normal(f.dtype)) for f in dtype.fields])
    return dtype


def native(dtype: DType, top: bool = True) -> bool:
    """Values this package writes exactly as Python's json.dumps would: strings, integers,
    booleans, lists and structs of them, and (not nested) floats, checked row by row."""
    if dtype in (pl.String, pl.Boolean, pl.Null) or isinstance(dtype, INTS):
        return True
    if dtype == pl.Float64:
        return top
    if isinstance(dtype, pl.List):
        return native(dtype.inner, top=False)
    if isinstance(dtype, pl.Struct):
        return all(native(f.dtype, top=False) for f in dtype.fields)
    return False


def has_text(dtype: DType) -> bool:
    """Strings somewhere in the value."""
    if dtype == pl.String:
        return True
    if isinstance(dtype, pl.List):
        return has_text(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(has_text(f.dtype) for f in dtype.fields)
    return False


def flat(dtype: DType) -> bool:
    """No object inside."""
    if isinstance(dtype, pl.Struct):
        return False
    if isinstance(dtype, pl.List):
        return flat(dtype.inner)
    return True


def float_guard(expr: pl.Expr) -> pl.Expr:
    """Floats Python prints otherwise than polars (exponent form, non-finite)."""
    magnitude = expr.abs()
    plain = expr.is_finite() & ((expr == 0) | ((magnitude >= 1e-4) & (magnitude < 1e16)))
    return expr.is_not_null() & ~plain
