"""Math that rounds identically on every platform: only IEEE + - * / and bit operations.

Library log/exp/erf, and even float64 sqrt in some vectorized builds (torch's CPU
sqrt is off by one ulp for about 1% of inputs), may differ between libm builds and
GPUs, which would change stored initial values. These replacements use exact
exponent manipulation on the bit patterns plus fixed series, rational approximations
or Newton steps, so their results are fully determined.
"""

from __future__ import annotations

import math
from typing import Any

from .ops import NUMPY, NumpyOps

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794

# Wichura (1988), Algorithm AS 241 (PPND16): coefficients in ascending powers.
_A = (
    3.3871328727963666080e0,
    1.3314166789178437745e2,
    1.9715909503065514427e3,
    1.3731693765509461125e4,
    4.5921953931549871457e4,
    6.7265770927008700853e4,
    3.3430575583588128105e4,
    2.5090809287301226727e3,
)
_B = (
    1.0,
    4.2313330701600911252e1,
    6.8718700749205790830e2,
    5.3941960214247511077e3,
    2.1213794301586595867e4,
    3.9307895800092710610e4,
    2.8729085735721942674e4,
    5.2264952788528545610e3,
)
_C = (
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
)
_D = (
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
)
_E = (
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
)
_F = (
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
)


def _horner(coeffs: tuple[float, ...], x: Any) -> Any:
    acc = x * 0.0 + coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = acc * x + c
    return acc


_EXP_MASK = 0x7FF << 52


def frexp(x: Any, xp: NumpyOps = NUMPY) -> tuple[Any, Any]:
    """(mantissa in [0.5, 1), exponent) of positive normal float64 values, exactly."""
    b = xp.bits(x)
    e = ((b >> 52) & 0x7FF) - 1022
    return xp.from_bits((b & ~_EXP_MASK) | (1022 << 52)), e


def pow2(e: Any, xp: NumpyOps = NUMPY) -> Any:
    """2.0**e for integer arrays e in [-1022, 1023], exactly."""
    return xp.from_bits((e + 1023) << 52)


def sqrt(x: Any, xp: NumpyOps = NUMPY) -> Any:
    """Square root of positive normal float64 values: exponent halving, a linear start
    and five Newton steps (within an ulp; the same bits everywhere)."""
    mant, e = frexp(x, xp)
    odd = (e & 1) == 1
    mant = xp.where(odd, mant * 2.0, mant)  # now in [0.5, 2), e even
    e = xp.where(odd, e - 1, e)
    y = 0.41731 + 0.59016 * mant
    for _ in range(5):
        y = 0.5 * (y + mant / y)
    return y * pow2(e >> 1, xp)


def log(x: Any, xp: NumpyOps = NUMPY) -> Any:
    """Natural log of positive normal float64 values: exact reduction, atanh series."""
    mant, e = frexp(x, xp)
    small = mant < _SQRT_HALF
    mant = xp.where(small, mant * 2.0, mant)
    e = xp.float64(xp.where(small, e - 1, e))
    s = (mant - 1.0) / (mant + 1.0)
    s2 = s * s
    series = _horner(tuple(1.0 / (2 * k + 1) for k in range(12)), s2)
    return (e * _LN2_HI + 2.0 * s * series) + e * _LN2_LO


def ndtri(u: Any, xp: NumpyOps = NUMPY) -> Any:
    """Standard normal quantile of float64 values in (0, 1) (AS 241, ~1e-16 relative)."""
    q = u - 0.5
    r = 0.180625 - q * q
    central = q * _horner(_A, r) / _horner(_B, r)
    tail_p = xp.where(q < 0.0, u, 1.0 - u)
    t = sqrt(-log(tail_p, xp), xp)
    near = _horner(_C, t - 1.6) / _horner(_D, t - 1.6)
    far = _horner(_E, t - 5.0) / _horner(_F, t - 5.0)
    tail = xp.where(t <= 5.0, near, far)
    tail = xp.where(q < 0.0, -tail, tail)
    return xp.where(xp.abs(q) <= 0.425, central, tail)


def exp_scalar(y: float) -> float:
    """exp of a Python float, by reduction to |r| <= ln2/2 and a Taylor series."""
    k = round(y / (_LN2_HI + _LN2_LO))
    r = (y - k * _LN2_HI) - k * _LN2_LO
    acc = 1.0
    for n in range(22, 0, -1):
        acc = 1.0 + acc * r / n
    return math.ldexp(acc, k)


def ndtr_scalar(x: float) -> float:
    """Standard normal CDF of a Python float, from its everywhere-convergent series.

    Phi(x) = 1/2 + phi(x) * sum_n x^(2n+1) / (2n+1)!!. Clamped to 0 or 1 beyond |x| = 8.
    """
    if x >= 8.0:
        return 1.0
    if x <= -8.0:
        return 0.0
    ax = abs(x)
    term = ax
    total = ax
    n = 1
    while term > 1e-17 * total:
        term = term * ax * ax / (2 * n + 1)
        total += term
        n += 1
    half = _INV_SQRT_2PI * exp_scalar(-0.5 * ax * ax) * total
    return 0.5 + half if x >= 0 else 0.5 - half
