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


@intrinsic
def column4(typingctx, array, row, column):
    """``array[row : row + 4, column]`` as one vector (C-contiguous 2-D float64 array, no bounds check).

    Four scalar loads into the lanes: the rows of a lane-major buffer read as
    the lanes of one vector, without a transposed copy.
    """
    if not (isinstance(array, types.Array) and array.dtype == types.float64 and array.ndim == 2):
        return None
    if array.layout != "C" or not isinstance(row, types.Integer) or not isinstance(column, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type, row_type, column_type = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        shape = cgutils.unpack_tuple(builder, view.shape, 2)
        first = context.cast(builder, args[1], row_type, types.intp)
        at = context.cast(builder, args[2], column_type, types.intp)
        vector = ir.Constant(_VECTOR, ir.Undefined)
        for position in range(4):
            index = builder.add(builder.mul(builder.add(first, first.type(position)), shape[1]), at)
            value = builder.load(builder.gep(view.data, [index]), align=8)
            vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), position))
        return vector

    return f64x4(array, row, column), codegen


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
    if value == f64x4:
        return lambda value, template: value
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


# --- lane-generic primitives: one source for scalar and 4-lane code -----------------
#
# Each function below takes float64 numbers or F64x4 vectors (a number beside
# a vector counts as four copies) and emits the same IEEE operation on a
# ``double`` or a ``<4 x double>``: code written with them and with + - * /
# (fastgrad.math) compiles to scalar code for a float and to vector code for a
# vector, with the same bits in every lane. Comparisons of vectors give a
# 4-lane mask; :func:`where` selects lane by lane without branching.

_MASK = ir.VectorType(ir.IntType(1), 4)
_I64 = ir.IntType(64)
_I64X4 = ir.VectorType(_I64, 4)


class M1x4Type(types.Type):
    """Four booleans: a comparison of F64x4 vectors, lane by lane."""

    def __init__(self):
        super().__init__(name="M1x4")


m1x4 = M1x4Type()


@register_model(M1x4Type)
class _M1x4Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _MASK)


_REAL = (types.Float, types.Integer)


def _is_real(t):
    return isinstance(t, _REAL) and not isinstance(t, types.Boolean)


def _lane_type(*args):
    """f64x4 if any argument is a vector, float64 if all are numbers, None (not typed here) otherwise."""
    if not all(a == f64x4 or _is_real(a) for a in args):
        return None
    return f64x4 if any(a == f64x4 for a in args) else types.float64


def _as_lanes(context, builder, value, from_type, to_type):
    """``value`` as a double (scalar code) or a <4 x double> (vector code; numbers are splatted)."""
    if from_type == f64x4:
        return value
    value = context.cast(builder, value, from_type, types.float64)
    return _splat(builder, value) if to_type == f64x4 else value


def _llvm_type(t):
    return _VECTOR if t == f64x4 else ir.DoubleType()


def _intrinsic_name(base, t):
    return f"llvm.{base}.{'v4f64' if t == f64x4 else 'f64'}"


def _llvm_call(base, arity):
    """Make an intrinsic calling LLVM's ``llvm.<base>`` on ``arity`` lane-generic arguments."""

    def typer(typingctx, *args):
        result = _lane_type(*args)
        if result is None or len(args) != arity:
            return None

        def codegen(context, builder, signature, values):
            values = [_as_lanes(context, builder, v, t, result) for v, t in zip(values, signature.args, strict=True)]
            llvm_type = _llvm_type(result)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(llvm_type, [llvm_type] * arity), _intrinsic_name(base, result)
            )
            return builder.call(function, values)

        return result(*args), codegen

    return typer


@intrinsic
def fma(typingctx, a, b, c):
    """Compute ``a * b + c`` with one rounding, in every lane (``llvm.fma``: the same bits on every CPU)."""
    return _llvm_call("fma", 3)(typingctx, a, b, c)


@intrinsic
def fabs(typingctx, a):
    """Return ``|a|``: clear the sign bit (``fabs(-0.0)`` is 0.0, NaN stays NaN)."""
    return _llvm_call("fabs", 1)(typingctx, a)


@intrinsic
def copysign(typingctx, a, b):
    """Return ``|a|`` with the sign bit of ``b``."""
    return _llvm_call("copysign", 2)(typingctx, a, b)


@intrinsic
def sqrt(typingctx, a):
    """Return the correctly rounded square root (IEEE ``squareRoot``: one instruction on every CPU)."""
    return _llvm_call("sqrt", 1)(typingctx, a)


def _compare(predicate):
    """Make ``a <predicate> b``: a bool (numbers) or a mask (vectors); ordered except ``!=``, as in Python."""

    @intrinsic
    def compare(typingctx, a, b):
        operands = _lane_type(a, b)
        if operands is None:
            return None
        result = m1x4 if operands == f64x4 else types.boolean

        def codegen(context, builder, signature, values):
            x, y = (_as_lanes(context, builder, v, t, operands) for v, t in zip(values, signature.args, strict=True))
            if predicate == "!=":
                return builder.fcmp_unordered("!=", x, y)
            return builder.fcmp_ordered(predicate, x, y)

        return result(a, b), codegen

    return compare


less = _compare("<")
less_equal = _compare("<=")
greater = _compare(">")
greater_equal = _compare(">=")
equal = _compare("==")
not_equal = _compare("!=")


def _vector_comparison(operation, compare_lanes):
    @overload(operation, inline="always")
    def _ol(a, b):
        if (a == f64x4 or b == f64x4) and _lane_type(a, b) is not None:
            return lambda a, b: compare_lanes(a, b)
        return None


for _operation, _compare_lanes in (
    (operator.lt, less),
    (operator.le, less_equal),
    (operator.gt, greater),
    (operator.ge, greater_equal),
    (operator.eq, equal),
    (operator.ne, not_equal),
):
    _vector_comparison(_operation, _compare_lanes)


def _is_condition(t):
    return t == m1x4 or isinstance(t, types.Boolean)


def _mask_binary(operation):
    @intrinsic
    def combine(typingctx, a, b):
        if not (_is_condition(a) and _is_condition(b)) or (a == m1x4) != (b == m1x4):
            return None

        def codegen(context, builder, signature, values):
            return getattr(builder, operation)(values[0], values[1])

        return a(a, b), codegen

    return combine


both = _mask_binary("and_")
either = _mask_binary("or_")


def _mask_operator(operation, combine):
    @overload(operation, inline="always")
    def _ol(a, b):
        if a == m1x4 and b == m1x4:
            return lambda a, b: combine(a, b)
        return None


for _operation, _combine in ((operator.and_, both), (operator.or_, either)):
    _mask_operator(_operation, _combine)


@intrinsic
def negate(typingctx, a):
    """Logical not of a bool or of every lane of a mask."""
    if not _is_condition(a):
        return None

    def codegen(context, builder, signature, values):
        return builder.not_(values[0])

    return a(a), codegen


@overload(operator.invert, inline="always")
def _ol_invert(a):
    if a == m1x4:
        return lambda a: negate(a)
    return None


@intrinsic
def any_lane(typingctx, condition):
    """Whether any lane of a mask is set (a bool is itself)."""
    if not _is_condition(condition):
        return None

    def codegen(context, builder, signature, values):
        if signature.args[0] != m1x4:
            return values[0]
        packed = builder.bitcast(values[0], ir.IntType(4))
        return builder.icmp_unsigned("!=", packed, ir.Constant(ir.IntType(4), 0))

    return types.boolean(condition), codegen


@intrinsic
def where(typingctx, condition, a, b):
    """Return ``a`` where ``condition`` holds, else ``b``, lane by lane, without a branch (LLVM ``select``)."""
    result = _lane_type(a, b)
    if result is None or not _is_condition(condition) or (condition == m1x4 and result != f64x4):
        return None
    if condition != m1x4 and result == f64x4:
        return None  # one bool for a whole vector: write an ordinary if

    def codegen(context, builder, signature, values):
        x, y = (_as_lanes(context, builder, v, t, result) for v, t in zip(values[1:], signature.args[1:], strict=True))
        return builder.select(values[0], x, y)

    return result(condition, a, b), codegen


@intrinsic
def pow2(typingctx, k):
    """``2**k`` for an integral float ``k`` in [-1022, 1023], built from its exponent bits (exact).

    Outside that range (or for NaN) the result is meaningless but harmless:
    callers clamp ``k`` first, then replace such lanes with :func:`where`.
    """
    result = _lane_type(k)
    if result is None:
        return None

    def codegen(context, builder, signature, values):
        x = _as_lanes(context, builder, values[0], signature.args[0], result)
        integer = _I64X4 if result == f64x4 else _I64
        as_int = builder.fptosi(builder.call(_freeze_function(builder, result), [x]), integer)

        def constant(v):
            return ir.Constant(integer, [v] * 4) if result == f64x4 else ir.Constant(integer, v)

        biased = builder.shl(builder.add(as_int, constant(1023)), constant(52))
        return builder.bitcast(biased, _llvm_type(result))

    return result(k), codegen


def _freeze_function(builder, t):
    """``llvm.minnum(llvm.maxnum(x, -1100), 1100)``: a finite value, so ``fptosi`` is never poison."""
    llvm_type = _llvm_type(t)
    name = f"fastgrad.clamp_for_int.{'v4' if t == f64x4 else 's'}"
    module = builder.module
    if name in module.globals:
        return module.globals[name]
    function = ir.Function(module, ir.FunctionType(llvm_type, [llvm_type]), name)
    function.linkage = "internal"
    function.attributes.add("alwaysinline")
    inner = ir.IRBuilder(function.append_basic_block())
    value = function.args[0]
    low = ir.Constant(llvm_type, [-1100.0] * 4) if t == f64x4 else ir.Constant(llvm_type, -1100.0)
    high = ir.Constant(llvm_type, [1100.0] * 4) if t == f64x4 else ir.Constant(llvm_type, 1100.0)
    for base, bound in (("maxnum", low), ("minnum", high)):
        signature = ir.FunctionType(llvm_type, [llvm_type] * 2)
        value = inner.call(cgutils.get_or_insert_function(module, signature, _intrinsic_name(base, t)), [value, bound])
    inner.ret(value)
    return function


@intrinsic
def split_exponent(typingctx, x):
    """``(m, e)`` with ``x = m * 2**e`` exactly, ``m`` in [sqrt(1/2), sqrt(2)) and ``e`` an integral float.

    For positive normal ``x`` (callers scale subnormals up first and handle
    zero, negatives, inf and NaN with :func:`where`).
    """
    result = _lane_type(x)
    if result is None:
        return None

    def codegen(context, builder, signature, values):
        value = _as_lanes(context, builder, values[0], signature.args[0], result)
        integer = _I64X4 if result == f64x4 else _I64

        def constant(v):
            return ir.Constant(integer, [v] * 4) if result == f64x4 else ir.Constant(integer, v)

        bits = builder.bitcast(value, integer)
        offset = builder.sub(bits, constant(0x3FE6A09E667F3BCD))  # the bits of sqrt(1/2)
        exponent = builder.ashr(offset, constant(52))
        mantissa = builder.bitcast(builder.sub(bits, builder.shl(exponent, constant(52))), _llvm_type(result))
        as_float = builder.sitofp(exponent, _llvm_type(result))
        return context.make_tuple(builder, types.UniTuple(result, 2), [mantissa, as_float])

    return types.UniTuple(result, 2)(x), codegen


@intrinsic
def with_lane(typingctx, vector, index, value):
    """``vector`` with lane ``index`` (a compile-time literal 0-3) replaced by the number ``value``."""
    if vector != f64x4 or not isinstance(index, types.IntegerLiteral) or not _is_real(value):
        return None
    position = index.literal_value

    def codegen(context, builder, signature, args):
        number = context.cast(builder, args[2], signature.args[2], types.float64)
        return builder.insert_element(args[0], number, ir.Constant(ir.IntType(32), position))

    return f64x4(vector, index, value), codegen


@intrinsic
def float_bits(typingctx, x):
    """Return the IEEE encoding of the float ``x`` as a uint64 (a bit cast, not a conversion)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(context.cast(builder, args[0], signature.args[0], types.float64), _I64)

    return types.uint64(x), codegen


#: Words the ziggurat's vector fast pass (:func:`ziggurat_pass8`) decodes at once.
ZIGGURAT_LANES = 8


def gathers_pay():
    """Whether Numba compiles for a CPU whose AVX-512 gathers make the vector fast pass pay: Intel's, not AMD's.

    Measured, the fast pass alone (one thread, blocks of 512 words): on Emerald Rapids (AVX-512) 0.6 against
    1.1 ns a normal; on Zen 4 (AVX-512, gathers microcoded) 1.20 against 0.70, so the scalar pass there (the
    seed case's optimisation 15.8-15.9 -> 12.4-12.7 ms a call on 2 threads, two alternating runs); on Zen 3
    (AVX2, slow gathers) a 4-lane version was slower than one word at a time (``docs/performance.md``). CPUs
    without AVX-512, and AMD's (``znver*``), keep the scalar pass: the same numbers either way. Read from
    Numba's target machine, so ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` (portable caches) are respected.
    """
    try:
        from numba.core.registry import cpu_target

        codegen = cpu_target.target_context.codegen()
        features, cpu = codegen._tm_features, codegen._get_host_cpu_name()
    except (AttributeError, ImportError):  # pragma: no cover - a Numba without the attributes: the scalar pass
        return False
    return "+avx512f" in features.split(",") and not cpu.startswith("znver")


def _contiguous_1d(array, dtype):
    return isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C" and array.dtype == dtype


@intrinsic
def ziggurat_pass8(typingctx, words, table, out, index, layers):
    """Run the ziggurat's fast pass on ``words[index : index + 8]``, all eight at once.

    The same arithmetic as the scalar pass in :func:`fastgrad.rng.normals_from_words`, lane by lane: layer
    ``i = word & (layers - 1)``, ``u = float((int64(word) >> 10) | 1)`` (exact: ``|u| < 2**53``),
    ``out[index + lane] = u * table[2 i]``, and the lane is rejected if ``|u| >= table[2 i + 1]``. The two
    table entries are fetched with ``llvm.masked.gather`` (one instruction a vector on AVX2 and AVX-512, scalar
    loads elsewhere: the same values either way). Returns the rejected lanes as bits of a uint64 (bit ``j``:
    word ``index + j``). C-contiguous 1-D arrays only (uint64 words, float64 table and ``out``), no bounds
    check: ``index + 8 <= len(words), len(out)``; ``layers`` a power of two no larger than ``len(table) / 2``.
    """
    if not (_contiguous_1d(words, types.uint64) and _contiguous_1d(table, types.float64)):
        return None
    if not (_contiguous_1d(out, types.float64) and isinstance(index, types.Integer)):
        return None
    if not isinstance(layers, types.Integer):
        return None
    n = ZIGGURAT_LANES
    doubles, integers = ir.VectorType(ir.DoubleType(), n), ir.VectorType(_I64, n)
    pointers, mask = ir.VectorType(ir.DoubleType().as_pointer(), n), ir.VectorType(ir.IntType(1), n)

    def codegen(context, builder, signature, args):
        index_type, layers_type = signature.args[3:]
        at = context.cast(builder, args[3], index_type, types.intp)

        def data(position):
            return context.make_array(signature.args[position])(context, builder, args[position]).data

        def splat(value):
            vector = builder.insert_element(ir.Constant(integers, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(vector, ir.Constant(integers, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))  # fmt: skip

        def constant(v):
            return ir.Constant(integers, [v] * n)

        word = builder.load(builder.bitcast(builder.gep(data(0), [at]), integers.as_pointer()), align=8)
        last_layer = builder.sub(context.cast(builder, args[4], layers_type, types.int64), _I64(1))
        layer = builder.and_(word, splat(last_layer))
        u = builder.sitofp(builder.or_(builder.ashr(word, constant(10)), constant(1)), doubles)
        # the address of table[2 i] (a vector of pointers: llvmlite's gep takes no vector index)
        width_at = builder.add(splat(builder.ptrtoint(data(1), _I64)), builder.shl(layer, constant(4)))
        gather = cgutils.get_or_insert_function(builder.module, ir.FunctionType(doubles, [pointers, ir.IntType(32),
                                                mask, doubles]), f"llvm.masked.gather.v{n}f64.v{n}p0f64")  # fmt: skip
        every, undefined = ir.Constant(mask, [1] * n), ir.Constant(doubles, ir.Undefined)
        width = builder.call(gather, [builder.inttoptr(width_at, pointers), ir.Constant(ir.IntType(32), 8), every,
                                      undefined])  # fmt: skip
        bound_at = builder.inttoptr(builder.add(width_at, constant(8)), pointers)
        bound = builder.call(gather, [bound_at, ir.Constant(ir.IntType(32), 8), every, undefined])
        builder.store(builder.fmul(u, width), builder.bitcast(builder.gep(data(2), [at]), doubles.as_pointer()),
                      align=8)  # fmt: skip
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(doubles, [doubles]), f"llvm.fabs.v{n}f64")
        rejected = builder.fcmp_ordered(">=", builder.call(fabs, [u]), bound)
        return builder.zext(builder.bitcast(rejected, ir.IntType(n)), _I64)

    return types.uint64(words, table, out, index, layers), codegen
