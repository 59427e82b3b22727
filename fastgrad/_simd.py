"""Explicit 4- and 8-lane float64 vectors for Numba, with IEEE semantics in every lane.

Numba leaves LLVM's SLP vectoriser off, and its loop vectoriser only
vectorises a floating-point sum when ``fastmath`` allows reassociation, which
would let the summation order (and so the last bits of every moment) depend
on the CPU's vector width. These intrinsics write the vector code out by
hand instead: ``F64x4`` values are LLVM ``<4 x double>`` (``F64x8``:
``<8 x double>``), each operation acts lane by lane with ordinary IEEE
rounding, and no fast-math flag is set, so LLVM may not reorder anything.
On AVX2 each 4-lane operation is one instruction; on SSE2 or NEON it is
two, with the same results; an 8-lane one is one AVX-512 instruction, two
on AVX2. The kernels' value loops use :data:`LANES`.

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


class F64xNType(types.Type):
    """``lanes`` float64 lanes held in SIMD registers (4: one AVX2 register; 8: one AVX-512 register)."""

    def __init__(self, lanes):
        self.lanes = lanes
        super().__init__(name=f"F64x{lanes}")


#: The widths the kernels use: 4 everywhere, 8 where the CPU has AVX-512 (:data:`LANES`).
f64x4 = F64xNType(4)
f64x8 = F64xNType(8)
F64x4Type = F64xNType  # (the name the 4-lane type had)


def vector_type(lanes):
    """Return the vector type of ``lanes`` (4 or 8) float64 lanes."""
    return {4: f64x4, 8: f64x8}[lanes]


@register_model(F64xNType)
class _F64xNModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.DoubleType(), fe_type.lanes))


def _is_vector(t):
    return isinstance(t, F64xNType)


def _llvm_vector(lanes):
    return ir.VectorType(ir.DoubleType(), lanes)


def _make_load(lanes):
    @intrinsic
    def load(typingctx, array, index):
        """``array[index : index + lanes]`` as one vector (1-D contiguous float64 array, no bounds check)."""
        if not (isinstance(array, types.Array) and array.dtype == types.float64 and array.ndim == 1):
            return None
        if array.layout != "C" or not isinstance(index, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            pointer = builder.gep(data, [args[1]])
            return builder.load(builder.bitcast(pointer, _llvm_vector(lanes).as_pointer()), align=8)

        return vector_type(lanes)(array, index), codegen

    return load


def _make_store(lanes):
    @intrinsic
    def store(typingctx, array, row, index, value):
        """``array[row, index : index + lanes] = value`` (C-contiguous 2-D float64 array, no bounds check).

        ``value`` is a vector of ``lanes`` lanes, or a number stored in every place.
        """
        if not (isinstance(array, types.Array) and array.dtype == types.float64 and array.ndim == 2):
            return None
        if array.layout != "C" or not isinstance(row, types.Integer) or not isinstance(index, types.Integer):
            return None
        if value != vector_type(lanes) and not isinstance(value, types.Number):
            return None

        def codegen(context, builder, signature, args):
            array_type, row_type, index_type, value_type = signature.args
            view = context.make_array(array_type)(context, builder, args[0])
            shape = cgutils.unpack_tuple(builder, view.shape, 2)
            row_index = context.cast(builder, args[1], row_type, types.intp)
            column = context.cast(builder, args[2], index_type, types.intp)
            offset = builder.add(builder.mul(row_index, shape[1]), column)
            pointer = builder.bitcast(builder.gep(view.data, [offset]), _llvm_vector(lanes).as_pointer())
            if _is_vector(value_type):
                vector = args[3]
            else:
                vector = _splat(builder, context.cast(builder, args[3], value_type, types.float64), lanes)
            builder.store(vector, pointer, align=8)
            return context.get_dummy_value()

        return types.none(array, row, index, value), codegen

    return store


load4, load8 = _make_load(4), _make_load(8)
store4, store8 = _make_store(4), _make_store(8)


def _make_column(lanes):
    @intrinsic
    def column(typingctx, array, row, column):
        """``array[row : row + lanes, column]`` as one vector (C-contiguous 2-D float64 array, no bounds check).

        Scalar loads into the lanes: the rows of a lane-major buffer read as
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
            vector = ir.Constant(_llvm_vector(lanes), ir.Undefined)
            for position in range(lanes):
                index = builder.add(builder.mul(builder.add(first, first.type(position)), shape[1]), at)
                value = builder.load(builder.gep(view.data, [index]), align=8)
                vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), position))
            return vector

        return vector_type(lanes)(array, row, column), codegen

    return column


column4, column8 = _make_column(4), _make_column(8)


def _splat(builder, x, lanes=4):
    vector = ir.Constant(_llvm_vector(lanes), ir.Undefined)
    for position in range(lanes):
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
        """Apply the IEEE operation lane by lane: two vectors of one width, or a vector and a number (its copies)."""
        result = _lane_type(a, b)
        if result is None or not _is_vector(result):
            return None

        def codegen(context, builder, signature, args):
            x, y = (_as_lanes(context, builder, v, t, result) for v, t in zip(args, signature.args, strict=True))
            return getattr(builder, operation)(x, y)

        return result(a, b), codegen

    return vector_operation


add4 = _binary("fadd")
sub4 = _binary("fsub")
mul4 = _binary("fmul")
div4 = _binary("fdiv")


@intrinsic
def neg4(typingctx, a):
    """Negate every lane (flip the sign bit, as scalar negation does)."""
    if not _is_vector(a):
        return None

    def codegen(context, builder, signature, args):
        return builder.fneg(args[0])

    return a(a), codegen


# Arithmetic operators on vectors, and between a vector and a number (taken as
# copies of it), so that scalar cores written with + - * / (the families'
# transforms and factors, polynomial built-in functions) also run on four or
# eight draws at once, with the same IEEE operations in each lane as the
# scalar code.


def _vector_operator(operation, vector_operation):
    @overload(operation, inline="always")
    def _ol(a, b):
        if (_is_vector(a) or _is_vector(b)) and _lane_type(a, b) is not None:
            return lambda a, b: vector_operation(a, b)
        return None


for _operation, _vector in (
    (operator.add, add4),
    (operator.sub, sub4),
    (operator.mul, mul4),
    (operator.truediv, div4),
):
    _vector_operator(_operation, _vector)


def like(value, template):
    """``value`` as a number if ``template`` is a number, as copies of it if it is a vector.

    For cores that return a constant on one branch and a draw-dependent value
    on another: both branches then have one type in scalar and vector code.
    """
    return float(value)


@intrinsic
def _splat_like(typingctx, value, template):
    if not (_is_real(value) and _is_vector(template)):
        return None

    def codegen(context, builder, signature, args):
        number = context.cast(builder, args[0], signature.args[0], types.float64)
        return _splat(builder, number, signature.args[1].lanes)

    return template(value, template), codegen


@overload(like, inline="always")
def _ol_like(value, template):
    if _is_vector(value):
        return lambda value, template: value
    if _is_vector(template):
        return lambda value, template: _splat_like(value, template)
    return lambda value, template: np.float64(value)


@overload(operator.neg, inline="always")
def _ol_neg(a):
    if _is_vector(a):
        return lambda a: neg4(a)
    return None


@intrinsic
def fma4(typingctx, a, b, c):
    """Compute ``a * b + c`` in every lane with one rounding (IEEE fusedMultiplyAdd), three vectors of one width.

    ``llvm.fma`` is exactly specified: an FMA instruction where the CPU has
    one, a correctly rounded software ``fma`` where it does not, so the bits
    are the same everywhere.
    """
    if not _is_vector(a) or b != a or c != a:
        return None

    def codegen(context, builder, signature, args):
        vector = _llvm_type(signature.args[0])
        name = _intrinsic_name("fma", signature.args[0])
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), name)
        return builder.call(fma, args)

    return a(a, b, c), codegen


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
    """Lane ``index`` (a compile-time literal below the vector's width) of a vector."""
    if not _is_vector(vector) or not isinstance(index, types.IntegerLiteral):
        return None
    position = index.literal_value
    if not 0 <= position < vector.lanes:
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], ir.Constant(ir.IntType(32), position))

    return types.float64(vector, index), codegen


# --- lane-generic primitives: one source for scalar and vector code -----------------
#
# Each function below takes float64 numbers or vectors of one width (a number
# beside a vector counts as copies of it) and emits the same IEEE operation on
# a ``double`` or a ``<N x double>``: code written with them and with
# + - * / (fastgrad.math) compiles to scalar code for a float and to vector
# code for a vector, with the same bits in every lane. Comparisons of vectors
# give a mask of as many lanes; :func:`where` selects lane by lane without
# branching.

_I64 = ir.IntType(64)


class M1xNType(types.Type):
    """``lanes`` booleans: a comparison of vectors, lane by lane."""

    def __init__(self, lanes):
        self.lanes = lanes
        super().__init__(name=f"M1x{lanes}")


m1x4 = M1xNType(4)
m1x8 = M1xNType(8)
M1x4Type = M1xNType  # (the name the 4-lane mask had)


@register_model(M1xNType)
class _M1xNModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(1), fe_type.lanes))


def _mask_of(t):
    return {4: m1x4, 8: m1x8}[t.lanes]


_REAL = (types.Float, types.Integer)


def _is_real(t):
    return isinstance(t, _REAL) and not isinstance(t, types.Boolean)


def _lane_type(*args):
    """Return the vector type if an argument is one (all of one width), float64 for numbers, else None."""
    if not all(_is_vector(a) or _is_real(a) for a in args):
        return None
    vectors = {a for a in args if _is_vector(a)}
    if len(vectors) > 1:
        return None
    return vectors.pop() if vectors else types.float64


def _as_lanes(context, builder, value, from_type, to_type):
    """``value`` as a double (scalar code) or a <N x double> (vector code; numbers are splatted)."""
    if _is_vector(from_type):
        return value
    value = context.cast(builder, value, from_type, types.float64)
    return _splat(builder, value, to_type.lanes) if _is_vector(to_type) else value


def _llvm_type(t):
    return _llvm_vector(t.lanes) if _is_vector(t) else ir.DoubleType()


def _llvm_integer(t):
    return ir.VectorType(_I64, t.lanes) if _is_vector(t) else _I64


def _integer_constant(t, v):
    return ir.Constant(_llvm_integer(t), [v] * t.lanes if _is_vector(t) else v)


def _intrinsic_name(base, t):
    return f"llvm.{base}.{f'v{t.lanes}f64' if _is_vector(t) else 'f64'}"


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
        result = _mask_of(operands) if _is_vector(operands) else types.boolean

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
        if (_is_vector(a) or _is_vector(b)) and _lane_type(a, b) is not None:
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


def _is_mask(t):
    return isinstance(t, M1xNType)


def _is_condition(t):
    return _is_mask(t) or isinstance(t, types.Boolean)


def _mask_binary(operation):
    @intrinsic
    def combine(typingctx, a, b):
        if not (_is_condition(a) and _is_condition(b)) or ((_is_mask(a) or _is_mask(b)) and a != b):
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
        if _is_mask(a) and a == b:
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
    if _is_mask(a):
        return lambda a: negate(a)
    return None


@intrinsic
def any_lane(typingctx, condition):
    """Whether any lane of a mask is set (a bool is itself)."""
    if not _is_condition(condition):
        return None

    def codegen(context, builder, signature, values):
        mask = signature.args[0]
        if not _is_mask(mask):
            return values[0]
        packed = builder.bitcast(values[0], ir.IntType(mask.lanes))
        return builder.icmp_unsigned("!=", packed, ir.Constant(ir.IntType(mask.lanes), 0))

    return types.boolean(condition), codegen


@intrinsic
def where(typingctx, condition, a, b):
    """Return ``a`` where ``condition`` holds, else ``b``, lane by lane, without a branch (LLVM ``select``)."""
    result = _lane_type(a, b)
    if result is None or not _is_condition(condition):
        return None
    if _is_mask(condition) != _is_vector(result) or (_is_mask(condition) and condition.lanes != result.lanes):
        return None  # (one bool for a whole vector: write an ordinary if)

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
        as_int = builder.fptosi(builder.call(_freeze_function(builder, result), [x]), _llvm_integer(result))
        biased = builder.shl(builder.add(as_int, _integer_constant(result, 1023)), _integer_constant(result, 52))
        return builder.bitcast(biased, _llvm_type(result))

    return result(k), codegen


def _freeze_function(builder, t):
    """``llvm.minnum(llvm.maxnum(x, -1100), 1100)``: a finite value, so ``fptosi`` is never poison."""
    llvm_type = _llvm_type(t)
    name = f"fastgrad.clamp_for_int.{f'v{t.lanes}' if _is_vector(t) else 's'}"
    module = builder.module
    if name in module.globals:
        return module.globals[name]
    function = ir.Function(module, ir.FunctionType(llvm_type, [llvm_type]), name)
    function.linkage = "internal"
    function.attributes.add("alwaysinline")
    inner = ir.IRBuilder(function.append_basic_block())
    value = function.args[0]
    low = ir.Constant(llvm_type, [-1100.0] * t.lanes) if _is_vector(t) else ir.Constant(llvm_type, -1100.0)
    high = ir.Constant(llvm_type, [1100.0] * t.lanes) if _is_vector(t) else ir.Constant(llvm_type, 1100.0)
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
        bits = builder.bitcast(value, _llvm_integer(result))
        offset = builder.sub(bits, _integer_constant(result, 0x3FE6A09E667F3BCD))  # the bits of sqrt(1/2)
        exponent = builder.ashr(offset, _integer_constant(result, 52))
        shifted = builder.shl(exponent, _integer_constant(result, 52))
        mantissa = builder.bitcast(builder.sub(bits, shifted), _llvm_type(result))
        as_float = builder.sitofp(exponent, _llvm_type(result))
        return context.make_tuple(builder, types.UniTuple(result, 2), [mantissa, as_float])

    return types.UniTuple(result, 2)(x), codegen


@intrinsic
def with_lane(typingctx, vector, index, value):
    """``vector`` with lane ``index`` (a compile-time literal below its width) replaced by the number ``value``."""
    if not _is_vector(vector) or not isinstance(index, types.IntegerLiteral) or not _is_real(value):
        return None
    position = index.literal_value
    if not 0 <= position < vector.lanes:
        return None

    def codegen(context, builder, signature, args):
        number = context.cast(builder, args[2], signature.args[2], types.float64)
        return builder.insert_element(args[0], number, ir.Constant(ir.IntType(32), position))

    return vector(vector, index, value), codegen


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
    features, cpu = _target_features()
    return "+avx512f" in features.split(",") and not cpu.startswith("znver")


def _target_features():
    """``(features, cpu)`` of the machine Numba compiles for (empty strings if this Numba hides them)."""
    try:
        from numba.core.registry import cpu_target

        codegen = cpu_target.target_context.codegen()
        return codegen._tm_features, codegen._get_host_cpu_name()
    except (AttributeError, ImportError):  # pragma: no cover - a Numba without the attributes
        return "", ""


def _lanes_from_environment():
    """Return the kernels' vector width: ``FASTGRAD_LANES`` (4 or 8) if set, else 8 with AVX-512, else 4."""
    import os

    setting = os.environ.get("FASTGRAD_LANES", "").strip()
    if setting:
        if setting not in ("4", "8"):
            raise ValueError(f"FASTGRAD_LANES must be 4 or 8 (the kernels' vector width), got {setting!r}")
        return int(setting)
    return 8 if "+avx512f" in _target_features()[0].split(",") else 4


#: Draws the kernels' value loops take at once (one vector): 8 where Numba compiles for AVX-512 (one
#: register), else 4 (one AVX2 register; two SSE2 or NEON ones). Every lane does the operations one
#: draw would, so the width changes speed only, never a bit. Measured on Zen 4 (AVX-512 on 256-bit units),
#: the logistic's value and derivative on an array, one thread: 3.52 ns a value on 4 lanes, 2.32 on 8
#: (the 4-lane code was bound by the out-of-order window). ``FASTGRAD_LANES=4`` or ``8`` overrides it.
LANES = _lanes_from_environment()


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


@intrinsic
def xoshiro_steps(typingctx, state, out, offset, steps, lanes):
    """Advance ``lanes`` xoshiro256++ generators ``steps`` times, their words to ``out[offset:]`` step by step.

    ``state[0 : 4 lanes]`` holds the generators word-major (``s0`` of every
    lane, then ``s1``, ...; :mod:`fastgrad.rng`); step ``t``'s words go to
    ``out[offset + lanes t : offset + lanes (t + 1)]``. The same integer
    operations as one generator at a time, so the same words; here the four
    state vectors stay in registers for all the steps, where the loop over
    the lanes in :mod:`fastgrad.rng` reloaded and stored them every step
    (``out`` and ``state`` are both uint64 arrays, so LLVM could not tell
    that they do not overlap). C-contiguous 1-D uint64 arrays, no bounds
    check: ``len(state) >= 4 lanes``, ``offset + lanes steps <= len(out)``;
    ``lanes`` a compile-time literal.
    """
    if not (_contiguous_1d(state, types.uint64) and _contiguous_1d(out, types.uint64)):
        return None
    if not (isinstance(offset, types.Integer) and isinstance(steps, types.Integer)):
        return None
    if not isinstance(lanes, types.IntegerLiteral):
        return None
    n = lanes.literal_value
    vector = ir.VectorType(_I64, n)

    def codegen(context, builder, signature, args):
        state_type, out_type, offset_type, steps_type, _ = signature.args
        words = context.make_array(state_type)(context, builder, args[0]).data
        target = context.make_array(out_type)(context, builder, args[1]).data
        at = context.cast(builder, args[2], offset_type, types.intp)
        count = context.cast(builder, args[3], steps_type, types.intp)

        def pointer(base, index):
            return builder.bitcast(builder.gep(base, [index]), vector.as_pointer())

        def constant(v):
            return ir.Constant(vector, [v] * n)

        rotate = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                                f"llvm.fshl.v{n}i64")  # fmt: skip

        def rotl(x, k):
            return builder.call(rotate, [x, x, constant(k)])

        slots = [cgutils.alloca_once(builder, vector) for _ in range(4)]
        for w, slot in enumerate(slots):
            builder.store(builder.load(pointer(words, _I64(w * n)), align=8), slot)
        with cgutils.for_range(builder, count) as loop:
            s0, s1, s2, s3 = (builder.load(slot) for slot in slots)
            word = builder.add(rotl(builder.add(s0, s3), 23), s0)
            place = builder.add(at, builder.mul(loop.index, at.type(n)))
            builder.store(word, pointer(target, place), align=8)
            t = builder.shl(s1, constant(17))
            s2 = builder.xor(s2, s0)
            s3 = builder.xor(s3, s1)
            s1 = builder.xor(s1, s2)
            s0 = builder.xor(s0, s3)
            s2 = builder.xor(s2, t)
            s3 = rotl(s3, 45)
            for slot, value in zip(slots, (s0, s1, s2, s3), strict=True):
                builder.store(value, slot)
        for w, slot in enumerate(slots):
            builder.store(builder.load(slot), pointer(words, _I64(w * n)), align=8)
        return context.get_dummy_value()

    return types.none(state, out, offset, steps, lanes), codegen
