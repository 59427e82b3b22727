"""Explicit 4-lane float64 vectors for Numba, with IEEE semantics in every lane.

Numba leaves LLVM's SLP vectoriser off, and its loop vectoriser only
vectorises a floating-point sum when ``fastmath`` allows reassociation, which
would let the summation order (and so the last bits of every moment) depend
on the CPU's vector width. These intrinsics write the vector code out by
hand instead: ``F64x4`` values are LLVM ``<4 x double>``, each operation acts
lane by lane with ordinary IEEE rounding, and no fast-math flag is set, so
LLVM may not reorder anything. On AVX2 each operation is one instruction; on
SSE2 or NEON it is two, with the same results.

The reductions in :mod:`fastgrad._reduction` use them in an order fixed by
the source (see there), which a pure-Python reference in the test suite
reproduces bit for bit.
"""

import operator

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

_VECTOR = ir.VectorType(ir.DoubleType(), 4)


class F64x4Type(types.Type):
    """Four float64 lanes held in one SIMD register."""

    def __init__(self):
        super().__init__(name="F64x4")


f64x4 = F64x4Type()


@register_model(F64x4Type)
class _F64x4Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


@intrinsic
def load4(typingctx, array, index):
    """``array[index : index + 4]`` as one vector (1-D contiguous float64 array, no bounds check)."""
    if not (isinstance(array, types.Array) and array.dtype == types.float64 and array.ndim == 1):
        return None
    if array.layout != "C" or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.gep(data, [args[1]])
        return builder.load(builder.bitcast(pointer, _VECTOR.as_pointer()), align=8)

    return f64x4(array, index), codegen


@intrinsic
def store4(typingctx, array, row, index, value):
    """``array[row, index : index + 4] = value`` (C-contiguous 2-D float64 array, no bounds check).

    ``value`` is a vector, or a number stored in all four places.
    """
    if not (isinstance(array, types.Array) and array.dtype == types.float64 and array.ndim == 2):
        return None
    if array.layout != "C" or not isinstance(row, types.Integer) or not isinstance(index, types.Integer):
        return None
    if value != f64x4 and not isinstance(value, types.Number):
        return None

    def codegen(context, builder, signature, args):
        array_type, row_type, index_type, value_type = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        shape = cgutils.unpack_tuple(builder, view.shape, 2)
        row_index = context.cast(builder, args[1], row_type, types.intp)
        column = context.cast(builder, args[2], index_type, types.intp)
        offset = builder.add(builder.mul(row_index, shape[1]), column)
        pointer = builder.bitcast(builder.gep(view.data, [offset]), _VECTOR.as_pointer())
        if value_type == f64x4:
            vector = args[3]
        else:
            vector = _splat(builder, context.cast(builder, args[3], value_type, types.float64))
        builder.store(vector, pointer, align=8)
        return context.get_dummy_value()

    return types.none(array, row, index, value), codegen


def _splat(builder, x):
    vector = ir.Constant(_VECTOR, ir.Undefined)
    for position in range(4):
        vector = builder.insert_element(vector, x, ir.Constant(ir.IntType(32), position))
    return vector


@intrinsic
def splat4(typingctx, value):
    """All four lanes equal to ``value`` (any real number, converted to float64)."""
    if not isinstance(value, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return _splat(builder, context.cast(builder, args[0], signature.args[0], types.float64))

    return f64x4(value), codegen


@intrinsic
def zero4(typingctx):
    """Four zeros."""

    def codegen(context, builder, signature, args):
        return ir.Constant(_VECTOR, [0.0] * 4)

    return f64x4(), codegen


def _binary(operation):
    @intrinsic
    def vector_operation(typingctx, a, b):
        if a != f64x4 or b != f64x4:
            return None

        def codegen(context, builder, signature, args):
            return getattr(builder, operation)(args[0], args[1])

        return f64x4(a, b), codegen

    return vector_operation


add4 = _binary("fadd")
sub4 = _binary("fsub")
mul4 = _binary("fmul")
div4 = _binary("fdiv")


@intrinsic
def neg4(typingctx, a):
    """Negate every lane (flip the sign bit, as scalar negation does)."""
    if a != f64x4:
        return None

    def codegen(context, builder, signature, args):
        return builder.fneg(args[0])

    return f64x4(a), codegen


# Arithmetic operators on vectors, and between a vector and a number (taken as
# four copies of it), so that scalar cores written with + - * / (the families'
# transforms and factors, polynomial built-in functions) also run on four
# draws at once, with the same IEEE operations in each lane as the scalar code.


def _vector_operator(operation, vector_operation):
    @overload(operation, inline="always")
    def _ol(a, b):
        real = (types.Float, types.Integer)
        if a == f64x4 and b == f64x4:
            return lambda a, b: vector_operation(a, b)
        if a == f64x4 and isinstance(b, real):
            return lambda a, b: vector_operation(a, splat4(b))
        if isinstance(a, real) and b == f64x4:
            return lambda a, b: vector_operation(splat4(a), b)
        return None


for _operation, _vector in (
    (operator.add, add4),
    (operator.sub, sub4),
    (operator.mul, mul4),
    (operator.truediv, div4),
):
    _vector_operator(_operation, _vector)


def like(value, template):
    """``value`` as a number if ``template`` is a number, as four copies if it is a vector.

    For cores that return a constant on one branch and a draw-dependent value
    on another: both branches then have one type in scalar and vector code.
    """
    return float(value)


@overload(like, inline="always")
def _ol_like(value, template):
    if template == f64x4:
        return lambda value, template: splat4(value)
    return lambda value, template: np.float64(value)


@overload(operator.neg, inline="always")
def _ol_neg(a):
    if a == f64x4:
        return lambda a: neg4(a)
    return None


@intrinsic
def fma4(typingctx, a, b, c):
    """Compute ``a * b + c`` in every lane with one rounding (IEEE fusedMultiplyAdd).

    ``llvm.fma`` is exactly specified: an FMA instruction where the CPU has
    one, a correctly rounded software ``fma`` where it does not, so the bits
    are the same everywhere.
    """
    if a != f64x4 or b != f64x4 or c != f64x4:
        return None

    def codegen(context, builder, signature, args):
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.fma.v4f64")
        return builder.call(fma, args)

    return f64x4(a, b, c), codegen


@intrinsic
def fma1(typingctx, a, b, c):
    """Scalar ``a * b + c`` with one rounding (same semantics as :func:`fma4`)."""
    if not all(isinstance(t, types.Float) for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        values = [context.cast(builder, v, t, types.float64) for v, t in zip(args, signature.args, strict=True)]
        double = ir.DoubleType()
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(double, [double] * 3), "llvm.fma.f64")
        return builder.call(fma, values)

    return types.float64(a, b, c), codegen


@intrinsic
def lane(typingctx, vector, index):
    """Lane ``index`` (a compile-time literal 0-3) of a vector."""
    if vector != f64x4 or not isinstance(index, types.IntegerLiteral):
        return None
    position = index.literal_value

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], ir.Constant(ir.IntType(32), position))

    return types.float64(vector, index), codegen
