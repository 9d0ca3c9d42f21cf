/* Seeded initial values and row classes without Python: see seeded_init.h. Each
 * function names the section of docs/FORMAT.md and the numpy reference it follows. */
#if defined(__GNUC__) && !defined(__clang__)
/* no fused multiply-add (FORMAT 1), even where the build forgets -ffp-contract=off */
#pragma GCC optimize("fp-contract=off")
#endif

#include "seeded_init.h"

#include <math.h> /* sqrt: only the correctly rounded scalar root of the 6.6 bounds */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "philox.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* the same for clang */
#endif

/* ------------------------------------------------------------ bits of binary64 */

#define SIGN64 ((uint64_t)1 << 63)
#define EXP_MASK64 ((uint64_t)0x7FF << 52)

static inline double from_bits(uint64_t b) {
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static inline uint64_t to_bits(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static inline double abs_bits(double x) { return from_bits(to_bits(x) & ~SIGN64); }

static inline int is_finite(double x) { return (to_bits(x) & EXP_MASK64) != EXP_MASK64; }

/* ------------------------------------------------------------ deterministic math (7) */

#define LN2_HI 0x1.62e42fee00000p-1
#define LN2_LO 0x1.a39ef35793c76p-33
#define SQRT_HALF 0x1.6a09e667f3bcdp-1
#define INV_SQRT_2PI 0x1.9884533d43651p-2
#define TWO_POW_M32 0x1p-32

/* Element functions inlined into the loops over elements, where compilers allow. */
#if defined(__GNUC__)
#define ELEMENT static inline __attribute__((always_inline))
#else
#define ELEMENT static inline
#endif

/* Loops over elements run in blocks of this many, a trip count compilers vectorise. */
#define BLOCK 16

/* Elements generated at once. */
#define CHUNK 1024

/* L_k = RN(1 / (2k + 1)), k = 0..11 (7.1) */
static const double LOG_L[12] = {
    0x1.0000000000000p+0, 0x1.5555555555555p-2, 0x1.999999999999ap-3, 0x1.2492492492492p-3,
    0x1.c71c71c71c71cp-4, 0x1.745d1745d1746p-4, 0x1.3b13b13b13b14p-4, 0x1.1111111111111p-4,
    0x1.e1e1e1e1e1e1ep-5, 0x1.af286bca1af28p-5, 0x1.8618618618618p-5, 0x1.642c8590b2164p-5};

/* AS 241 coefficients in ascending powers (7.2) */
static const double AS_A[8] = {0x1.b18d91e9eef75p+1, 0x1.0a4888b1a436ep+7, 0x1.ece5d2213c0ccp+10,
                               0x1.ad1d8cd4ee71dp+13, 0x1.66c3e869b752ap+15, 0x1.06c1c55b78f20p+16,
                               0x1.052d26b2e45e4p+15, 0x1.39a296f7d925ep+11};
static const double AS_B[8] = {0x1.0000000000000p+0, 0x1.5281b386e1ab5p+5, 0x1.5797efdc8b3f7p+9,
                               0x1.512322e75c89fp+12, 0x1.4b772d5d65266p+14, 0x1.3317caa64f4bep+15,
                               0x1.c0e457cb1ae76p+14, 0x1.46a7eca984b69p+12};
static const double AS_C[8] = {0x1.6c665fde9526ap+0, 0x1.2857748cab19bp+2, 0x1.713f71462256ap+2,
                               0x1.d2ecb1a3d02c4p+1, 0x1.453cc085375b2p+0, 0x1.ef2abb9b85c37p-3,
                               0x1.744eb6c45ec67p-6, 0x1.9615ac0b7ace9p-11};
static const double AS_D[8] = {0x1.0000000000000p+0, 0x1.06cefbb46a449p+1, 0x1.ad278e6526633p+0,
                               0x1.61292f23385c9p-1, 0x1.2f5123394f040p-3, 0x1.f207a7eab17bfp-7,
                               0x1.1f18cbfdf2728p-11, 0x1.20d3f686439e4p-30};
static const double AS_E[8] = {0x1.aa1b1c13ee526p+2, 0x1.5daea6e875003p+2, 0x1.c8ea6461fa445p+0,
                               0x1.2fad9315255cfp-2, 0x1.b2b41193b4ee7p-6, 0x1.45c1908425345p-10,
                               0x1.c6ec6cc59e02ap-16, 0x1.afb74d693bf93p-23};
static const double AS_F[8] = {0x1.0000000000000p+0, 0x1.331d34fc7d77fp-1, 0x1.186eb183443fbp-3,
                               0x1.e76f93215462ap-7, 0x1.9c8bc979dc5d7p-11, 0x1.35c2c496374bfp-16,
                               0x1.31446f740b9e0p-23, 0x1.269bff1f8c190p-49};

/* H(c_0 .. c_7; x) and H(c_0 .. c_11; x): acc = c_d, then acc = (acc * x) + c_i down
 * to c_0, written out (straight-line code vectorises across elements). acc starts as
 * (x * 0.0) + c_d, as in the reference (detmath._horner): c_d for every finite x, and
 * NaN, not +-inf, for an infinite one, which no valid spec reaches. */
ELEMENT double horner7(const double *c, double x) {
    double acc = x * 0.0 + c[7];
    acc = acc * x + c[6];
    acc = acc * x + c[5];
    acc = acc * x + c[4];
    acc = acc * x + c[3];
    acc = acc * x + c[2];
    acc = acc * x + c[1];
    return acc * x + c[0];
}

ELEMENT double horner11(const double *c, double x) {
    double acc = x * 0.0 + c[11];
    acc = acc * x + c[10];
    acc = acc * x + c[9];
    acc = acc * x + c[8];
    acc = acc * x + c[7];
    acc = acc * x + c[6];
    acc = acc * x + c[5];
    acc = acc * x + c[4];
    acc = acc * x + c[3];
    acc = acc * x + c[2];
    acc = acc * x + c[1];
    return acc * x + c[0];
}

/* 7.0 frexp: x = mant * 2^e, mant in [0.5, 1), of positive normal x (other inputs give
 * the same bits as the reference's bit operations). The exponent is returned as
 * e + 1022, the biased exponent field (0..2047). */
ELEMENT double det_frexp(double x, uint64_t *field) {
    uint64_t b = to_bits(x);
    *field = (b >> 52) & 0x7FF;
    return from_bits((b & ~EXP_MASK64) | ((uint64_t)1022 << 52));
}

/* 7.0 2^e, -1022 <= e <= 1023, exactly (unsigned arithmetic: no overflow anywhere) */
static inline double det_pow2(int64_t e) { return from_bits(((uint64_t)e + 1023u) << 52); }

/* (double)e of a small integer given as e + 1022 (0 <= e + 1022 < 2^50), exactly: the
 * bits of 1.5 * 2^52 + e, minus 1.5 * 2^52. Branch-free integer and binary64 steps
 * (the loops below vectorise). */
ELEMENT double exponent_value(uint64_t field) {
    return from_bits(0x4338000000000000u + field - 1022u) - 0x1.8p52;
}

/* c ? a : b for c = 0 or 1, by bits: both a and b are computed first, so compilers
 * neither branch nor (for fear of a floating-point trap) keep a branch in a loop. */
ELEMENT double select_bits(uint64_t c, double a, double b) {
    uint64_t m = 0u - c;
    return from_bits((to_bits(a) & m) | (to_bits(b) & ~m));
}

/* x < 0.0 as 0 or 1, by integer steps on the bits (false for -0.0 and NaNs, as the
 * comparison): the sign, a magnitude above 0 and not above that of inf. */
ELEMENT uint64_t less_than_zero(double x) {
    uint64_t b = to_bits(x), mag = b & ~SIGN64;
    uint64_t nonzero = (mag + 0x7FFFFFFFFFFFFFFFu) >> 63, nan = (mag + 0x000FFFFFFFFFFFFFu) >> 63;
    return (b >> 63) & nonzero & (nan ^ 1u);
}

/* The element functions below have no branches on data: the loops over them vectorise,
 * and every element takes exactly the operations of FORMAT 7. */

/* 7.0 sqrt: exponent halving, a linear start and five Newton steps */
ELEMENT double det_sqrt(double x) {
    uint64_t field;
    double mant = det_frexp(x, &field), twice = mant * 2.0;
    uint64_t odd = field & 1u; /* e = field - 1022 is odd */
    mant = select_bits(odd, twice, mant);
    double y = 0x1.ab5350092ccf7p-2 + 0x1.2e297396d0918p-1 * mant; /* 0.41731, 0.59016 */
    y = 0.5 * (y + mant / y); /* five Newton steps */
    y = 0.5 * (y + mant / y);
    y = 0.5 * (y + mant / y);
    y = 0.5 * (y + mant / y);
    y = 0.5 * (y + mant / y);
    /* 2^(e'/2) for the even e' = e - odd: the bits (e'/2 + 1023) << 52, that is
     * ((field - odd) / 2 + 512) << 52 */
    return y * from_bits((((field - odd) >> 1) + 512u) << 52);
}

/* 7.1 log */
ELEMENT double det_log(double x) {
    uint64_t field;
    double mant = det_frexp(x, &field), twice = mant * 2.0;
    /* mant < SQRT_HALF: mant (exponent field 1022) is never NaN; if positive, its bits
     * compare as the values */
    uint64_t mb = to_bits(mant);
    uint64_t small = (mb >> 63) | (((mb + (SIGN64 - to_bits(SQRT_HALF))) >> 63) ^ 1u);
    mant = select_bits(small, twice, mant);
    double E = exponent_value(field - small);
    double s = (mant - 1.0) / (mant + 1.0);
    double s2 = s * s;
    double S = horner11(LOG_L, s2);
    return (E * LN2_HI + (2.0 * s) * S) + E * LN2_LO;
}

/* 7.2 ndtri, |u - 0.5| <= 0.425 */
ELEMENT double ndtri_central(double u) {
    double q = u - 0.5;
    double r = 0x1.71eb851eb851fp-3 - q * q; /* 0.180625 */
    return (q * horner7(AS_A, r)) / horner7(AS_B, r);
}

/* 7.2 ndtri, |u - 0.5| > 0.425, t = sqrt(-log(p)) <= 5 (the near tail; the far one
 * is ndtri_far); writes t. */
ELEMENT double ndtri_near(double u, double *t_out) {
    double q = u - 0.5, upper = 1.0 - u;
    uint64_t lower = less_than_zero(q);
    double p = select_bits(lower, u, upper);
    double t = det_sqrt(-det_log(p));
    double x = t - 0x1.999999999999ap+0; /* 1.6 */
    double v = horner7(AS_C, x) / horner7(AS_D, x);
    *t_out = t;
    return select_bits(lower, -v, v);
}

/* 7.2 ndtri, t > 5 */
static inline double ndtri_far(double u, double t) {
    double x = t - 5.0;
    double v = horner7(AS_E, x) / horner7(AS_F, x);
    return u - 0.5 < 0.0 ? -v : v;
}

static inline int ndtri_is_central(double u) { return abs_bits(u - 0.5) <= 0x1.b333333333333p-2; }

/* 7.2 ndtri (AS 241) of one value */
static double det_ndtri(double u) {
    double t, v;
    if (ndtri_is_central(u))
        return ndtri_central(u);
    v = ndtri_near(u, &t);
    return t <= 5.0 ? v : ndtri_far(u, t);
}

/* ndtri of n values (out may be u): the tails gathered, the central formula for all
 * in blocks, then the tails in blocks (scratch: tu, tv of n doubles, idx of n words). */
static void ndtri_many(const double *u, size_t n, double *out, double *tu, double *tv,
                       uint32_t *idx) {
    size_t i, nt = 0;
    for (i = 0; i < n; i++) { /* gather the tails, branch-free */
        idx[nt] = (uint32_t)i;
        tu[nt] = u[i];
        nt += !ndtri_is_central(u[i]);
    }
    /* blocks through local arrays: no aliasing for the compiler to fear */
    for (i = 0; i + BLOCK <= n; i += BLOCK) {
        double v[BLOCK];
        for (size_t j = 0; j < BLOCK; j++)
            v[j] = ndtri_central(u[i + j]);
        memcpy(out + i, v, sizeof v);
    }
    for (; i < n; i++)
        out[i] = ndtri_central(u[i]);
    for (i = 0; i + BLOCK <= nt; i += BLOCK) {
        double v[BLOCK], t[BLOCK];
        for (size_t j = 0; j < BLOCK; j++)
            v[j] = ndtri_near(tu[i + j], &t[j]);
        for (size_t j = 0; j < BLOCK; j++)
            if (!(t[j] <= 5.0))
                v[j] = ndtri_far(tu[i + j], t[j]);
        memcpy(tv + i, v, sizeof v);
    }
    for (; i < nt; i++) {
        double t;
        tv[i] = ndtri_near(tu[i], &t);
        if (!(t <= 5.0))
            tv[i] = ndtri_far(tu[i], t);
    }
    for (i = 0; i < nt; i++)
        out[idx[i]] = tv[i];
}

/* round half to even of |t| < 2^52 (Python's round) */
static int64_t round_half_even(double t) {
    int64_t i = (int64_t)t; /* toward zero */
    if ((double)i > t)
        i -= 1; /* floor */
    double frac = t - (double)i;
    if (frac > 0.5 || (frac == 0.5 && ((uint64_t)i & 1u)))
        i += 1;
    return i;
}

/* 7.3 exp, -32 < y <= 0 */
static double det_exp(double y) {
    const double ln2 = LN2_HI + LN2_LO;
    int64_t k = round_half_even(y / ln2);
    double kd = (double)k;
    double r = (y - kd * LN2_HI) - kd * LN2_LO;
    double acc = 1.0;
    for (int n = 22; n >= 1; n--)
        acc = 1.0 + (acc * r) / (double)n;
    return acc * det_pow2(k); /* ldexp: exact here, the result being normal */
}

/* 7.4 ndtr of a scalar */
static double det_ndtr(double x) {
    if (x >= 8.0)
        return 1.0;
    if (x <= -8.0)
        return 0.0;
    double ax = abs_bits(x), term = ax, total = ax;
    int64_t n = 1;
    while (term > 0x1.70ef54646d497p-57 * total) { /* 1e-17 */
        term = ((term * ax) * ax) / (double)(2 * n + 1);
        total = total + term;
        n = n + 1;
    }
    double half = (INV_SQRT_2PI * det_exp((-0.5 * ax) * ax)) * total;
    return x >= 0.0 ? 0.5 + half : 0.5 - half;
}

/* ------------------------------------------------------------ casting (6.8) */

static size_t dtype_size(int dtype) {
    switch (dtype) {
    case PC_FLOAT64:
        return 8;
    case PC_FLOAT32:
        return 4;
    case PC_FLOAT16:
    case PC_BFLOAT16:
        return 2;
    default:
        return 0;
    }
}

static inline uint32_t f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* IEEE binary32 -> binary16, round to nearest even, subnormals kept, overflow to inf;
 * a NaN keeps its sign and top 10 payload bits, made nonzero (numpy's rule; the NaNs
 * that reach here are quiet, and keep their quiet bit). */
uint16_t pc_half_bits(uint32_t x) {
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) { /* NaN */
        uint32_t payload = (a >> 13) & 0x3FFu;
        return (uint16_t)(sign | 0x7C00u | (payload ? payload : 1u));
    }
    if (a == 0x7F800000u) /* inf */
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x477FF000u) /* |x| >= 65520: rounds to inf */
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) { /* a normal half: rebias the exponent, round 13 bits off */
        uint32_t r = a - 0x38000000u, h = r >> 13, rest = r & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
            h += 1; /* a carry into the exponent is right, up to 0x7C00 = inf */
        return (uint16_t)(sign | h);
    }
    if (a <= 0x33000000u) /* |x| <= 2^-25: rounds to zero */
        return (uint16_t)sign;
    { /* a subnormal half: units of 2^-24 */
        uint32_t mant = (a & 0x7FFFFFu) | 0x800000u, shift = 126u - (a >> 23); /* 14..24 */
        uint32_t h = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1u)))
            h += 1; /* up to 0x400: the smallest normal */
        return (uint16_t)(sign | h);
    }
}

/* bfloat16 of a binary32 pattern (6.8), without 32-bit overflow */
uint16_t pc_bfloat16_bits(uint32_t b) {
    return (uint16_t)((((uint64_t)b + 0x7FFFu + ((b >> 16) & 1u)) >> 16) & 0xFFFFu);
}

/* Store n binary64 values as `dtype` (through RN32) at out. */
static void store(int dtype, const double *v, size_t n, unsigned char *out) {
    size_t i;
    switch (dtype) {
    case PC_FLOAT32:
        for (i = 0; i + BLOCK <= n; i += BLOCK) {
            float f[BLOCK];
            for (size_t j = 0; j < BLOCK; j++)
                f[j] = (float)v[i + j];
            memcpy(out + 4 * i, f, sizeof f);
        }
        for (; i < n; i++) {
            float f = (float)v[i];
            memcpy(out + 4 * i, &f, 4);
        }
        break;
    case PC_FLOAT64:
        for (i = 0; i < n; i++) {
            double d = (double)(float)v[i];
            memcpy(out + 8 * i, &d, 8);
        }
        break;
    case PC_FLOAT16:
        for (i = 0; i < n; i++) {
            uint16_t h = pc_half_bits(f32_bits((float)v[i]));
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    default: /* PC_BFLOAT16 */
        for (i = 0; i < n; i++) {
            uint16_t h = pc_bfloat16_bits(f32_bits((float)v[i]));
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    }
}

/* ------------------------------------------------------------ value kinds (6.4, 6.6) */

/* What the value of element i needs, computed once per call. */
typedef struct {
    int kind, random_sign;
    uint32_t k0, k1;
    double a, span;         /* uniform kinds: a + span * u */
    double mean, std;       /* normal kinds and trunc_normal: mean + std * ndtri(.) */
    double alpha, dalpha;   /* trunc_normal: p = alpha + dalpha * u */
    double lo_clip, hi_clip; /* trunc_normal: a, b */
    double c;               /* constant: 0.0 + value */
    uint64_t theta;         /* two_value */
    double high, low;       /* two_value: 0.0 + high, 0.0 + low */
    const double *knots;    /* quantile */
    uint64_t q;             /* quantile: len(knots) - 1 */
} gen;

static void gen_init(gen *g, const pc_init_spec *s, uint32_t k0, uint32_t k1) {
    memset(g, 0, sizeof *g);
    g->kind = s->kind;
    g->k0 = k0;
    g->k1 = k1;
    switch (s->kind) {
    case PC_KIND_UNIFORM:
        g->a = s->a;
        g->span = s->b - s->a;
        break;
    case PC_KIND_KAIMING_UNIFORM:
    case PC_KIND_XAVIER_UNIFORM: {
        double bound;
        if (s->kind == PC_KIND_KAIMING_UNIFORM)
            bound = s->gain * sqrt(3.0 / (double)(s->mode_fan_out ? s->fan_out : s->fan_in));
        else
            bound = s->gain * sqrt(6.0 / (double)(s->fan_in + s->fan_out));
        g->a = -bound;
        g->span = bound - -bound;
        break;
    }
    case PC_KIND_NORMAL:
        g->mean = s->mean;
        g->std = s->std;
        break;
    case PC_KIND_KAIMING_NORMAL:
        g->mean = 0.0;
        g->std = s->gain / sqrt((double)(s->mode_fan_out ? s->fan_out : s->fan_in));
        break;
    case PC_KIND_XAVIER_NORMAL:
        g->mean = 0.0;
        g->std = s->gain * sqrt(2.0 / (double)(s->fan_in + s->fan_out));
        break;
    case PC_KIND_TRUNC_NORMAL: {
        double lo = det_ndtr((s->a - s->mean) / s->std), hi = det_ndtr((s->b - s->mean) / s->std);
        g->mean = s->mean;
        g->std = s->std;
        g->alpha = lo;
        g->dalpha = hi - lo;
        g->lo_clip = s->a;
        g->hi_clip = s->b;
        break;
    }
    case PC_KIND_CONSTANT:
        g->c = 0.0 + s->value;
        g->random_sign = s->random_sign != 0;
        break;
    case PC_KIND_TWO_VALUE:
        g->theta = (uint64_t)(s->p * 0x1p32); /* trunc; p in [0, 1] */
        g->high = 0.0 + s->high;
        g->low = 0.0 + s->low;
        break;
    case PC_KIND_QUANTILE:
        g->knots = s->knots;
        g->q = (uint64_t)s->n_knots - 1;
        break;
    default:
        break;
    }
}

/* The uniform of a word: (w + 1/2) 2^-32, exact. (double)w is formed from the bits
 * 2^52 + w, minus 2^52 (exact), which vectorises where an unsigned conversion does not. */
static inline double uniform01(uint32_t w) {
    return ((from_bits(0x4330000000000000u | w) - 0x1p52) + 0.5) * TWO_POW_M32;
}

/* Values (binary64, before the density mask) of elements [start, start + n), n <= CHUNK;
 * w and sw are scratch for n words, tmp for 2 n doubles. */
static void base_values(const gen *g, uint64_t start, size_t n, uint32_t *w, uint32_t *sw,
                        double *tmp, double *out) {
    size_t i;
    if (g->kind != PC_KIND_CONSTANT)
        pc_philox_words(g->k0, g->k1, PC_PURPOSE_VALUES, start, n, w);
    switch (g->kind) {
    case PC_KIND_UNIFORM:
    case PC_KIND_KAIMING_UNIFORM:
    case PC_KIND_XAVIER_UNIFORM: {
        double a = g->a, span = g->span;
        for (i = 0; i + BLOCK <= n; i += BLOCK)
            for (size_t j = 0; j < BLOCK; j++)
                out[i + j] = a + span * uniform01(w[i + j]);
        for (; i < n; i++)
            out[i] = a + span * uniform01(w[i]);
        break;
    }
    case PC_KIND_NORMAL:
    case PC_KIND_KAIMING_NORMAL:
    case PC_KIND_XAVIER_NORMAL: {
        double mean = g->mean, std = g->std;
        for (i = 0; i < n; i++)
            out[i] = uniform01(w[i]);
        ndtri_many(out, n, out, tmp, tmp + n, sw);
        for (i = 0; i < n; i++)
            out[i] = mean + std * out[i];
        break;
    }
    case PC_KIND_TRUNC_NORMAL: {
        double mean = g->mean, std = g->std, lo = g->lo_clip, hi = g->hi_clip;
        for (i = 0; i < n; i++)
            out[i] = g->alpha + g->dalpha * uniform01(w[i]);
        ndtri_many(out, n, out, tmp, tmp + n, sw);
        for (i = 0; i < n; i++) {
            double z = mean + std * out[i];
            out[i] = z < lo ? lo : (z > hi ? hi : z);
        }
        break;
    }
    case PC_KIND_CONSTANT:
        if (!g->random_sign) {
            for (i = 0; i < n; i++)
                out[i] = g->c;
        } else {
            double c = g->c, neg = -g->c;
            pc_philox_words(g->k0, g->k1, PC_PURPOSE_SIGN, start, n, sw);
            for (i = 0; i < n; i++)
                out[i] = (sw[i] >> 31) ? neg : c;
        }
        break;
    case PC_KIND_TWO_VALUE:
        for (i = 0; i < n; i++)
            out[i] = (uint64_t)w[i] < g->theta ? g->high : g->low;
        break;
    case PC_KIND_QUANTILE: {
        double qd = (double)g->q;
        for (i = 0; i < n; i++) {
            double t = uniform01(w[i]) * qd;
            uint64_t k = (uint64_t)t; /* t > 0: truncation is floor */
            if (k > g->q - 1)
                k = g->q - 1;
            double lo = 0.0 + g->knots[k], hi = 0.0 + g->knots[k + 1];
            out[i] = lo + (hi - lo) * (t - (double)k);
        }
        break;
    }
    default:
        break;
    }
}

/* ------------------------------------------------------------ ranks (6.7, 5.1) */

/* Rows up to this long sort by insertion. */
#define SMALL_SORT 24

/* Sort packed items (key << 32 | position) ascending as u64: stable by key, positions
 * being distinct and packed below it. Insertion sort, for short rows. */
static void insertion_sort(uint64_t *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        uint64_t x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Stable LSD radix sort of n packed items by their bits [32, 32 + 8 key_bytes)
 * (key_bytes <= 4), the higher bits being zero; b is scratch of n items. Items whose
 * low 32 bits are their positions in ascending order come out sorted by (key,
 * position). Returns a or b, whichever holds the result. */
static uint64_t *sort_packed(uint64_t *a, uint64_t *b, size_t n, unsigned key_bytes) {
    size_t hist[4][256];
    if (n <= SMALL_SORT) {
        insertion_sort(a, n);
        return a;
    }
    memset(hist, 0, sizeof hist[0] * key_bytes);
    if (key_bytes == 4) {
        for (size_t i = 0; i < n; i++) {
            uint32_t k = (uint32_t)(a[i] >> 32);
            hist[0][k & 255u]++;
            hist[1][(k >> 8) & 255u]++;
            hist[2][(k >> 16) & 255u]++;
            hist[3][k >> 24]++;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            uint32_t k = (uint32_t)(a[i] >> 32);
            for (unsigned p = 0; p < key_bytes; p++)
                hist[p][(k >> (8 * p)) & 255u]++;
        }
    }
    for (unsigned p = 0; p < key_bytes; p++) {
        unsigned shift = 32 + 8 * p;
        size_t *h = hist[p], sum = 0;
        if (h[(a[0] >> shift) & 255u] == n)
            continue; /* one digit for all: the pass would move nothing */
        for (unsigned d = 0; d < 256; d++) {
            size_t t = h[d];
            h[d] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++)
            b[h[(a[i] >> shift) & 255u]++] = a[i];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    return a;
}

/* The item of rank t (0-based) among n distinct packed items: radix selection, a byte
 * at a time from the top, each level keeping only the bucket that holds rank t (a few
 * items after the first level, for random keys) in b (room for n items). */
static uint64_t select_packed(const uint64_t *a, uint64_t *b, size_t n, size_t t) {
    const uint64_t *src = a;
    for (int shift = 56; n > SMALL_SORT && shift >= 0; shift -= 8) {
        size_t hist[256] = {0}, below = 0, c = 0;
        unsigned d = 0;
        for (size_t i = 0; i < n; i++)
            hist[(src[i] >> shift) & 255u]++;
        while (below + hist[d] <= t)
            below += hist[d++];
        for (size_t i = 0; i < n; i++) /* in place when src is b: c <= i */
            if (((src[i] >> shift) & 255u) == d)
                b[c++] = src[i];
        src = b;
        n = c;
        t -= below;
    }
    if (src != b)
        memcpy(b, src, n * sizeof *b);
    insertion_sort(b, n);
    return b[t];
}

/* A 64-bit key and its position, for float64 rows. */
typedef struct {
    uint64_t key, pos;
} key_pos;

/* sort_packed for 64-bit keys. */
static key_pos *sort_pairs(key_pos *a, key_pos *b, size_t n) {
    size_t hist[8][256];
    if (n <= SMALL_SORT) {
        for (size_t i = 1; i < n; i++) {
            key_pos x = a[i];
            size_t j = i;
            while (j > 0 && a[j - 1].key > x.key) { /* stable: positions stay ascending */
                a[j] = a[j - 1];
                j--;
            }
            a[j] = x;
        }
        return a;
    }
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = a[i].key;
        for (unsigned p = 0; p < 8; p++)
            hist[p][(k >> (8 * p)) & 255u]++;
    }
    for (unsigned p = 0; p < 8; p++) {
        size_t *h = hist[p], sum = 0;
        if (h[(a[0].key >> (8 * p)) & 255u] == n)
            continue;
        for (unsigned d = 0; d < 256; d++) {
            size_t t = h[d];
            h[d] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++)
            b[h[(a[i].key >> (8 * p)) & 255u]++] = a[i];
        key_pos *t = a;
        a = b;
        b = t;
    }
    return a;
}

/* Values kept per row (6.7): min(m, max(0, floor(density * m + 0.5))) */
static uint64_t kept_count(double density, uint64_t m) {
    double x = density * (double)m + 0.5;
    if (!(x >= 0.0))
        return 0;
    if (!(x < 0x1p64))
        return m;
    uint64_t k = (uint64_t)x;
    return k < m ? k : m;
}

/* ------------------------------------------------------------ pc_init_rows */

/* An unsigned key of a `bits`-wide pattern whose order is the order key's (5.1). */
static inline uint64_t ukey(uint64_t b, unsigned bits) {
    uint64_t sign = (uint64_t)1 << (bits - 1), all = sign | (sign - 1);
    return (b & sign) ? ~b & all : b | sign;
}

/* ------------------------------------------------------------ the levels kind (6.6, 6.7) */

/* The level values of a levels spec cast to the dtype (lv, 2L + 1 of them) and the first
 * rank of each level, then m (bound, 2L + 2 entries) for rows of m (6.6, 6.7). */
static unsigned level_table(const pc_init_spec *s, int dtype, uint64_t m, unsigned char *lv,
                            uint64_t *bound) {
    unsigned L = (unsigned)s->levels, groups = 2 * L;
    double lam[2 * PC_INIT_MAX_LEVELS + 1];
    uint64_t kept = kept_count(s->density, m);
    for (unsigned j = 0; j < L; j++) { /* a_j; lambda_{L-1-j} = -a_j, lambda_{L+j} = a_j */
        double u = 0.5 + 0.5 * (((double)j + 0.5) / (double)L);
        double a = det_ndtri(u) * s->scale;
        lam[L - 1 - j] = -a;
        lam[L + j] = a;
    }
    lam[groups] = 0.0;
    store(dtype, lam, groups + 1, lv);
    bound[0] = 0;
    for (unsigned t = 1; t < groups; t++)
        bound[t] = ((uint64_t)t * kept) / groups;
    bound[groups] = kept;
    bound[groups + 1] = m;
    return groups;
}

/* Ranking a levels row by selection (6.7): a position's level is the number of rank
 * boundaries at or below its rank, so only the boundaries' ranks need finding, not a
 * sorted row. The positions are binned by the top bits of their mask words (bins hold
 * consecutive ranks); a bin holding no boundary gives all its positions one level, and
 * only the few bins that hold one are sorted by (word, position). */
struct pc_level_rows {
    gen g;
    uint64_t m;
    unsigned groups, bits;
    uint64_t bound[2 * PC_INIT_MAX_LEVELS + 2];
    uint32_t *w;         /* the row's mask words */
    uint64_t *buf;       /* (word, position) of the positions in bins holding a boundary */
    uint32_t *start;     /* first rank of each bin (bins + 1 entries) */
    uint32_t *pos;       /* where the next position of a bin holding a boundary goes */
    uint16_t *base;      /* the level of a bin's smallest rank */
    uint16_t *inside;    /* boundaries inside each bin */
    uint16_t *mapped;    /* what base maps to */
    uint64_t *aux;       /* scratch for sorting a large bin */
};

/* Bins of 2**bits for rows of m: about 16 positions per bin. */
static unsigned level_bin_bits(uint64_t m) {
    unsigned b = 0;
    while (b < 20 && ((uint64_t)1 << (b + 4)) < m)
        b++;
    return b ? b : 1;
}

void pc_level_rows_free(pc_level_rows *lr) {
    if (lr == NULL)
        return;
    free(lr->w);
    free(lr->buf);
    free(lr->start);
    free(lr->pos);
    free(lr->base);
    free(lr->inside);
    free(lr->mapped);
    free(lr->aux);
    free(lr);
}

pc_level_rows *pc_level_rows_new(const pc_init_spec *s, uint32_t k0, uint32_t k1, uint64_t m) {
    unsigned char lv[(2 * PC_INIT_MAX_LEVELS + 1) * 8];
    if (s == NULL || s->kind != PC_KIND_LEVELS ||
        !(s->levels >= 1.0 && s->levels <= PC_INIT_MAX_LEVELS) || m == 0 ||
        m > ((uint64_t)1 << 32))
        return NULL;
    pc_level_rows *lr = calloc(1, sizeof *lr);
    if (lr == NULL)
        return NULL;
    gen_init(&lr->g, s, k0, k1);
    lr->m = m;
    lr->groups = level_table(s, PC_FLOAT32, m, lv, lr->bound);
    lr->bits = level_bin_bits(m);
    const size_t bins = (size_t)1 << lr->bits;
    lr->w = malloc(sizeof(uint32_t) * m);
    lr->buf = malloc(sizeof(uint64_t) * m);
    lr->aux = malloc(sizeof(uint64_t) * m);
    lr->start = malloc(sizeof(uint32_t) * (bins + 1));
    lr->pos = malloc(sizeof(uint32_t) * bins);
    lr->base = malloc(sizeof(uint16_t) * bins);
    lr->inside = malloc(sizeof(uint16_t) * bins);
    lr->mapped = malloc(sizeof(uint16_t) * bins);
    if (!lr->w || !lr->buf || !lr->aux || !lr->start || !lr->pos || !lr->base || !lr->inside ||
        !lr->mapped) {
        pc_level_rows_free(lr);
        return NULL;
    }
    return lr;
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
/* The words' rounds are 32x32 -> 64-bit products over a batch: 3-4x faster with AVX2,
 * where the CPU has it (the same integers either way). Not under ThreadSanitizer, whose
 * runtime is not up yet when the clones' resolver runs. */
#define PC_WORD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PC_WORD_CLONES
#endif

PC_WORD_CLONES
static void mask_words(uint32_t k0, uint32_t k1, uint64_t start, uint64_t n, uint32_t *out) {
    pc_philox_words(k0, k1, PC_PURPOSE_MASK, start, n, out);
}

void pc_level_rows_row(pc_level_rows *lr, uint64_t r, const uint16_t *map, uint16_t *level) {
    const uint64_t m = lr->m;
    const unsigned shift = 32 - lr->bits;
    const size_t bins = (size_t)1 << lr->bits;
    uint32_t *w = lr->w, *start = lr->start, *pos = lr->pos;
    uint16_t *base = lr->base, *inside = lr->inside, *mapped = lr->mapped;
    mask_words(lr->g.k0, lr->g.k1, r * m, m, w);
    memset(start, 0, sizeof(uint32_t) * (bins + 1));
    for (uint64_t j = 0; j < m; j++)
        start[(w[j] >> shift) + 1]++;
    for (size_t b = 0; b < bins; b++)
        start[b + 1] += start[b];
    /* the boundaries bound[1 .. groups] (ranks, ascending), those below m, to their bins */
    unsigned t = 1;
    for (size_t b = 0; b < bins; b++) {
        base[b] = (uint16_t)(t - 1);
        unsigned n = 0;
        while (t <= lr->groups && lr->bound[t] < start[b + 1]) {
            n++;
            t++;
        }
        inside[b] = (uint16_t)n;
        pos[b] = start[b];
        mapped[b] = map != NULL ? map[base[b]] : base[b];
    }
    for (uint64_t j = 0; j < m; j++) {
        const uint32_t b = w[j] >> shift;
        level[j] = mapped[b];
        if (inside[b])
            lr->buf[pos[b]++] = (uint64_t)w[j] << 32 | j;
    }
    for (size_t b = 0; b < bins; b++) {
        if (!inside[b])
            continue;
        const size_t n = start[b + 1] - start[b];
        const uint64_t *sorted = sort_packed(lr->buf + start[b], lr->aux, n, 4);
        unsigned lev = base[b];
        t = lev + 1; /* the next boundary: bound[t] */
        for (size_t i = 0; i < n; i++) {
            const uint64_t rank = start[b] + i;
            while (t <= lr->groups && lr->bound[t] <= rank) {
                lev++;
                t++;
            }
            level[(uint32_t)sorted[i]] = map != NULL ? map[lev] : (uint16_t)lev;
        }
    }
}

/* The level of each position of rows [r0, r1) (uint16 per position). */
static int level_rows(const pc_init_spec *s, const gen *g, uint64_t m, uint64_t r0,
                      uint64_t r1, uint16_t *level) {
    pc_level_rows *lr = pc_level_rows_new(s, g->k0, g->k1, m);
    if (lr == NULL)
        return PC_INIT_E_NOMEM;
    for (uint64_t r = r0; r < r1; r++)
        pc_level_rows_row(lr, r, NULL, level + (size_t)((r - r0) * m));
    pc_level_rows_free(lr);
    return PC_INIT_OK;
}

static int levels_rows(const pc_init_spec *s, const gen *g, int dtype, uint64_t m, uint64_t r0,
                       uint64_t r1, unsigned char *out) {
    size_t size = dtype_size(dtype);
    unsigned char lv[(2 * PC_INIT_MAX_LEVELS + 1) * 8];
    uint64_t bound[2 * PC_INIT_MAX_LEVELS + 2];
    level_table(s, dtype, m, lv, bound);
    const size_t n = (size_t)((r1 - r0) * m);
    uint16_t *level = malloc(sizeof(uint16_t) * n);
    if (level == NULL)
        return PC_INIT_E_NOMEM;
    const int status = level_rows(s, g, m, r0, r1, level);
    for (size_t i = 0; status == PC_INIT_OK && i < n; i++)
        memcpy(out + i * size, lv + level[i] * size, size);
    free(level);
    return status;
}

int pc_init_level_rows(const pc_init_spec *s, uint32_t k0, uint32_t k1, uint64_t R, uint64_t m,
                       uint64_t r0, uint64_t r1, uint16_t *level) {
    gen g;
    if (s == NULL || s->kind != PC_KIND_LEVELS ||
        !(s->levels >= 1.0 && s->levels <= PC_INIT_MAX_LEVELS) || r0 > r1 || r1 > R)
        return PC_INIT_E_ARGUMENT;
    if (r0 == r1 || m == 0)
        return PC_INIT_OK;
    if (m > ((uint64_t)1 << 32))
        return PC_INIT_E_RANGE;
    gen_init(&g, s, k0, k1);
    return level_rows(s, &g, m, r0, r1, level);
}

int pc_levels_classes(const pc_init_spec *s, int dtype, uint64_t m, void *values,
                      uint64_t *counts, uint16_t *class_of_level, uint64_t *n_classes) {
    const size_t size = dtype_size(dtype);
    unsigned char lv[(2 * PC_INIT_MAX_LEVELS + 1) * 8];
    uint64_t bound[2 * PC_INIT_MAX_LEVELS + 2], key[2 * PC_INIT_MAX_LEVELS + 1];
    unsigned order[2 * PC_INIT_MAX_LEVELS + 1], present = 0;
    if (size == 0 || s == NULL || s->kind != PC_KIND_LEVELS ||
        !(s->levels >= 1.0 && s->levels <= PC_INIT_MAX_LEVELS))
        return PC_INIT_E_ARGUMENT;
    const unsigned groups = level_table(s, dtype, m, lv, bound);
    for (unsigned lev = 0; lev <= groups; lev++) {
        uint64_t bits = 0;
        memcpy(&bits, lv + lev * size, size); /* little-endian hosts */
        key[lev] = ukey(bits, (unsigned)(8 * size));
        class_of_level[lev] = UINT16_MAX; /* a level no position holds */
        if (bound[lev + 1] > bound[lev]) { /* present: insert by key, then level */
            unsigned at = present++;
            while (at > 0 && key[order[at - 1]] > key[lev]) {
                order[at] = order[at - 1];
                at--;
            }
            order[at] = lev;
        }
    }
    uint64_t n = 0;
    unsigned char *vals = values;
    for (unsigned i = 0; i < present; i++) {
        const unsigned lev = order[i];
        if (i == 0 || key[lev] != key[order[i - 1]]) { /* a new bit pattern: a new class */
            memcpy(vals + n * size, lv + lev * size, size);
            counts[n++] = 0;
        }
        counts[n - 1] += bound[lev + 1] - bound[lev];
        class_of_level[lev] = (uint16_t)(n - 1);
    }
    *n_classes = n;
    return PC_INIT_OK;
}

int pc_init_rows(const pc_init_spec *s, uint32_t k0, uint32_t k1, int dtype, uint64_t R,
                 uint64_t m, uint64_t r0, uint64_t r1, void *out) {
    size_t size = dtype_size(dtype);
    unsigned char *dst = out;
    gen g;
    if (size == 0 || s == NULL || s->kind < 0 || s->kind >= PC_KIND_COUNT)
        return PC_INIT_E_ARGUMENT;
    if (r0 > r1 || r1 > R || (m != 0 && R > UINT64_MAX / m))
        return PC_INIT_E_ARGUMENT;
    if (r0 == r1 || m == 0)
        return PC_INIT_OK; /* no values */
    /* what casts and indexing below rely on (pc_init_check has checked more) */
    if ((s->kind == PC_KIND_LEVELS && !(s->levels >= 1.0 && s->levels <= PC_INIT_MAX_LEVELS)) ||
        (s->kind == PC_KIND_QUANTILE && (s->knots == NULL || s->n_knots < 2)) ||
        (s->kind == PC_KIND_TWO_VALUE && !(s->p >= 0.0 && s->p <= 1.0)))
        return PC_INIT_E_ARGUMENT;
    gen_init(&g, s, k0, k1);

    int masked = 0;
    uint64_t kept = m;
    if (s->density < 1.0) {
        kept = kept_count(s->density, m);
        masked = kept < m; /* kept == m keeps every value: no mask */
    }
    int ranked = masked && kept > 0; /* kept == 0 masks every value: no ranks */
    if (ranked || s->kind == PC_KIND_LEVELS) {
        if (m > ((uint64_t)1 << 32))
            return PC_INIT_E_RANGE;
        if (m > SIZE_MAX / (2 * sizeof(uint64_t)))
            return PC_INIT_E_NOMEM; /* more than the address space (32-bit hosts) */
    }
    if (s->kind == PC_KIND_LEVELS)
        return levels_rows(s, &g, dtype, m, r0, r1, dst);

    uint32_t *w = malloc(sizeof(uint32_t) * 2 * CHUNK), *mw = NULL;
    double *v = malloc(sizeof(double) * 3 * CHUNK); /* values, then 2 CHUNK of scratch */
    uint64_t *a = NULL, *b = NULL;
    int status = PC_INIT_OK;
    if (ranked) {
        a = malloc(sizeof(uint64_t) * (size_t)m);
        b = malloc(sizeof(uint64_t) * (size_t)m);
        mw = malloc(sizeof(uint32_t) * (size_t)m);
    }
    if (!w || !v || (ranked && (!a || !b || !mw))) {
        status = PC_INIT_E_NOMEM;
        goto done;
    }
    if (!masked) { /* dense: the elements of rows [r0, r1) in chunks */
        uint64_t start = r0 * m, stop = r1 * m;
        for (uint64_t i = start; i < stop; i += CHUNK) {
            size_t n = (size_t)(stop - i < CHUNK ? stop - i : CHUNK);
            base_values(&g, i, n, w, w + CHUNK, v + CHUNK, v);
            store(dtype, v, n, dst + (size_t)(i - start) * size);
        }
        goto done;
    }
    for (uint64_t r = r0; r < r1; r++) {
        /* position j keeps its value iff (word j, j) <= last, the item of mask rank
         * kept - 1 (6.7) */
        uint64_t last = 0;
        if (ranked) {
            mask_words(k0, k1, r * m, m, mw);
            for (size_t j = 0; j < (size_t)m; j++)
                a[j] = (uint64_t)mw[j] << 32 | j;
            last = select_packed(a, b, (size_t)m, (size_t)(kept - 1));
        }
        for (uint64_t j0 = 0; j0 < m; j0 += CHUNK) {
            size_t n = (size_t)(m - j0 < CHUNK ? m - j0 : CHUNK);
            base_values(&g, r * m + j0, n, w, w + CHUNK, v + CHUNK, v);
            for (size_t i = 0; i < n; i++) { /* branch-free: v or |v| * 0.0 (+0.0) */
                uint64_t item = ranked ? (uint64_t)mw[j0 + i] << 32 | (j0 + i) : 0;
                uint64_t keep = ranked && item <= last ? ~(uint64_t)0 : 0;
                uint64_t vb = to_bits(v[i]), zb = to_bits(abs_bits(v[i]) * 0.0);
                v[i] = from_bits((vb & keep) | (zb & ~keep));
            }
            store(dtype, v, n, dst + (size_t)((r - r0) * m + j0) * size);
        }
    }
done:
    free(w);
    free(v);
    free(a);
    free(b);
    free(mw);
    return status;
}

/* ------------------------------------------------------------ shape and checks */

/* first * d[0] * ... * d[n-1] in *out; 0 when that is 2^64 or more (a zero factor
 * makes it 0, whatever the others). */
static int exact_product(uint64_t first, const uint64_t *d, int n, uint64_t *out) {
    uint64_t p = first;
    int over = 0;
    for (int i = 0; i < n; i++) {
        if (d[i] == 0 || first == 0) {
            *out = 0;
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (p != 0 && d[i] > UINT64_MAX / p)
            over = 1;
        p *= d[i];
    }
    *out = over ? 0 : p;
    return !over;
}

void pc_init_rows_shape(const pc_init_spec *s, const uint64_t *shape, int ndim, uint64_t *R,
                        uint64_t *m) {
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d]; /* < 2^48, or a zero dim makes it 0 (also modulo 2^64) */
    if (s->tensor_granularity || ndim < 2) {
        *R = 1;
        *m = n;
    } else {
        *R = shape[0];
        *m = shape[0] ? n / shape[0] : 0;
    }
}

static const char *const KIND_NAMES[PC_KIND_COUNT] = {
    "uniform",        "normal",        "trunc_normal", "kaiming_uniform",
    "kaiming_normal", "xavier_uniform", "xavier_normal", "constant",
    "two_value",      "quantile",      "levels"};

const char *pc_init_kind_name(int kind) {
    return kind >= 0 && kind < PC_KIND_COUNT ? KIND_NAMES[kind] : NULL;
}

int pc_init_kind(const char *name, size_t len) {
    for (int k = 0; k < PC_KIND_COUNT; k++)
        if (strlen(KIND_NAMES[k]) == len && memcmp(KIND_NAMES[k], name, len) == 0)
            return k;
    return -1;
}

static int fail(char *err, size_t err_len, const char *fmt, ...) {
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return PC_INIT_E_SPEC;
}

int pc_init_check(const pc_init_spec *s, const uint64_t *shape, int ndim, uint32_t version,
                  char *err, size_t err_len) {
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (s == NULL || s->kind < 0 || s->kind >= PC_KIND_COUNT)
        return fail(err, err_len, "initializer spec has an unknown kind");
    if (ndim < 0 || ndim > PC_MAX_SHAPE_DIMS)
        return fail(err, err_len, "initializer spec for a shape of %d dims", ndim);
    int kind = s->kind;
    const char *name = KIND_NAMES[kind];
    if (s->spec_version != 1)
        return fail(err, err_len, "%s spec version %lld is not supported", name,
                    (long long)s->spec_version);

    /* finite parameters of the kind */
    static const char *const PNAMES[] = {"a",     "b",    "mean", "std", "gain",  "value",
                                         "low",   "high", "p",    "levels", "scale"};
    const double pv[] = {s->a,   s->b,    s->mean, s->std, s->gain,  s->value,
                         s->low, s->high, s->p,    s->levels, s->scale};
    static const unsigned PMASK[PC_KIND_COUNT] = {
        /* bit i: PNAMES[i] is a parameter of the kind */
        1u << 0 | 1u << 1,                       /* uniform */
        1u << 2 | 1u << 3,                       /* normal */
        1u << 0 | 1u << 1 | 1u << 2 | 1u << 3,   /* trunc_normal */
        1u << 4, 1u << 4, 1u << 4, 1u << 4,      /* kaiming, xavier */
        1u << 5,                                 /* constant */
        1u << 6 | 1u << 7 | 1u << 8,             /* two_value */
        0,                                       /* quantile */
        1u << 9 | 1u << 10};                     /* levels */
    for (unsigned i = 0; i < 11; i++)
        if ((PMASK[kind] >> i & 1u) && !is_finite(pv[i]))
            return fail(err, err_len, "%s spec parameter %s=%g must be a finite number", name,
                        PNAMES[i], pv[i]);
    if (!(s->density >= 0.0 && s->density <= 1.0))
        return fail(err, err_len, "%s spec density %g must be in [0, 1]", name, s->density);
    if (s->tensor_granularity != 0 && s->tensor_granularity != 1)
        return fail(err, err_len, "%s spec granularity must be one of ('row', 'tensor')", name);

    /* fans (6.5), exactly: a true fan of 2^64 or more matches no stored one */
    int empty = 0, ok_in, ok_out;
    uint64_t fi, fo;
    for (int d = 0; d < ndim; d++)
        empty |= shape[d] == 0;
    if (ndim < 2) {
        ok_in = ok_out = exact_product(1, shape, ndim, &fi);
        fo = fi;
    } else {
        ok_in = exact_product(shape[1], shape + 2, ndim - 2, &fi);
        ok_out = exact_product(shape[0], shape + 2, ndim - 2, &fo);
    }
    if (!ok_in || !ok_out || s->fan_in != fi || s->fan_out != fo)
        return fail(err, err_len, "%s spec fans (%llu, %llu) do not match the tensor's shape",
                    name, (unsigned long long)s->fan_in, (unsigned long long)s->fan_out);

    if ((kind == PC_KIND_NORMAL || kind == PC_KIND_TRUNC_NORMAL) && !(s->std > 0.0))
        return fail(err, err_len, "%s spec needs std > 0", name);
    if (kind == PC_KIND_TRUNC_NORMAL && !(s->a < s->b))
        return fail(err, err_len, "trunc_normal spec needs a < b");
    if (kind == PC_KIND_UNIFORM && !(s->a <= s->b))
        return fail(err, err_len, "uniform spec needs a <= b");
    if (kind == PC_KIND_TWO_VALUE && !(s->p >= 0.0 && s->p <= 1.0))
        return fail(err, err_len, "two_value spec needs 0 <= p <= 1");
    if (kind == PC_KIND_KAIMING_UNIFORM || kind == PC_KIND_KAIMING_NORMAL) {
        if (s->mode_fan_out != 0 && s->mode_fan_out != 1)
            return fail(err, err_len, "mode must be 'fan_in' or 'fan_out'");
        if ((s->mode_fan_out ? s->fan_out : s->fan_in) == 0 && !empty)
            return fail(err, err_len, "%s needs a positive %s", name,
                        s->mode_fan_out ? "fan_out" : "fan_in");
    }
    if ((kind == PC_KIND_XAVIER_UNIFORM || kind == PC_KIND_XAVIER_NORMAL) && s->fan_in == 0 &&
        s->fan_out == 0 && !empty)
        return fail(err, err_len, "%s needs fan_in + fan_out > 0", name);
    if (kind == PC_KIND_CONSTANT && s->random_sign != 0 && s->random_sign != 1)
        return fail(err, err_len, "constant spec random_sign must be true or false");
    if (kind == PC_KIND_QUANTILE) {
        if (s->n_knots < 2 || s->n_knots > PC_INIT_MAX_KNOTS || s->knots == NULL)
            return fail(err, err_len, "quantile spec needs a list of 2..%d knots",
                        PC_INIT_MAX_KNOTS);
        for (size_t i = 0; i < s->n_knots; i++)
            if (!is_finite(s->knots[i]))
                return fail(err, err_len, "quantile spec knot %g must be a finite number",
                            s->knots[i]);
        for (size_t i = 1; i < s->n_knots; i++)
            if (s->knots[i] < s->knots[i - 1])
                return fail(err, err_len, "quantile spec knots must be non-decreasing");
        if (version < PC_KIND_QUANTILE_SINCE)
            return fail(err, err_len, "the quantile kind needs format version %d",
                        PC_KIND_QUANTILE_SINCE);
    }
    if (kind == PC_KIND_LEVELS) {
        double n = s->levels;
        if (!(n >= 1.0 && n <= PC_INIT_MAX_LEVELS && n == (double)(int)n))
            return fail(err, err_len, "levels spec needs a whole number of levels in 1..%d",
                        PC_INIT_MAX_LEVELS);
        if (!(s->scale > 0.0))
            return fail(err, err_len, "levels spec needs scale > 0");
        if (version < PC_KIND_LEVELS_SINCE)
            return fail(err, err_len, "the levels kind needs format version %d",
                        PC_KIND_LEVELS_SINCE);
    }
    return PC_INIT_OK;
}

/* ------------------------------------------------------------ row classes (5.1) */
#define STACK_ROW 512

int pc_row_classes(int dtype, const void *row, uint64_t m, uint32_t *order, uint64_t *counts,
                   void *values, uint64_t *n_classes) {
    size_t size = dtype_size(dtype);
    const unsigned char *src = row;
    unsigned char *vals = values;
    uint64_t n = 0;
    if (size == 0)
        return PC_INIT_E_ARGUMENT;
    if (m > ((uint64_t)1 << 32))
        return PC_INIT_E_RANGE;
    if (m == 0) {
        if (n_classes)
            *n_classes = 0;
        return PC_INIT_OK;
    }
    if (dtype != PC_FLOAT64) {
        uint64_t stack[2 * STACK_ROW], *heap = NULL, *a = stack;
        unsigned bits = (unsigned)(8 * size);
        if (m > STACK_ROW) {
            a = heap = malloc(sizeof(uint64_t) * 2 * (size_t)m);
            if (heap == NULL)
                return PC_INIT_E_NOMEM;
        }
        if (size == 4) {
            for (size_t j = 0; j < (size_t)m; j++) {
                uint32_t b;
                memcpy(&b, src + 4 * j, 4);
                a[j] = ukey(b, 32) << 32 | j;
            }
        } else {
            for (size_t j = 0; j < (size_t)m; j++) {
                uint16_t b;
                memcpy(&b, src + 2 * j, 2);
                a[j] = ukey(b, 16) << 32 | j;
            }
        }
        const uint64_t *sorted = sort_packed(a, a + m, (size_t)m, bits / 8);
        uint64_t prev = 0;
        for (size_t q = 0; q < (size_t)m; q++) {
            uint64_t key = sorted[q] >> 32;
            uint32_t pos = (uint32_t)sorted[q];
            if (q == 0 || key != prev) {
                if (counts)
                    counts[n] = 0;
                if (vals)
                    memcpy(vals + n * size, src + (size_t)pos * size, size);
                n++;
                prev = key;
            }
            if (counts)
                counts[n - 1]++;
            if (order)
                order[q] = pos;
        }
        free(heap);
    } else {
        key_pos stack[2 * STACK_ROW], *heap = NULL, *a = stack;
        if (m > STACK_ROW) {
            a = heap = malloc(sizeof(key_pos) * 2 * (size_t)m);
            if (heap == NULL)
                return PC_INIT_E_NOMEM;
        }
        for (size_t j = 0; j < (size_t)m; j++) {
            uint64_t b;
            memcpy(&b, src + 8 * j, 8);
            a[j].key = ukey(b, 64);
            a[j].pos = j;
        }
        const key_pos *sorted = sort_pairs(a, a + m, (size_t)m);
        for (size_t q = 0; q < (size_t)m; q++) {
            uint32_t pos = (uint32_t)sorted[q].pos;
            if (q == 0 || sorted[q].key != sorted[q - 1].key) {
                if (counts)
                    counts[n] = 0;
                if (vals)
                    memcpy(vals + n * 8, src + (size_t)pos * 8, 8);
                n++;
            }
            if (counts)
                counts[n - 1]++;
            if (order)
                order[q] = pos;
        }
        free(heap);
    }
    if (n_classes)
        *n_classes = n;
    return PC_INIT_OK;
}

/* ------------------------------------------------------------ probes (tests only) */

#ifdef PC_SEEDED_INIT_PROBES
double pc_probe_math(int fn, double x) {
    switch (fn) {
    case 0:
        return det_log(x);
    case 1:
        return det_sqrt(x);
    case 2:
        return det_ndtri(x);
    case 3:
        return det_exp(x);
    default:
        return det_ndtr(x);
    }
}

uint16_t pc_probe_f16(uint32_t bits) { return pc_half_bits(bits); }

int pc_probe_ndtri_many(const double *u, size_t n, double *out) {
    double *tmp = malloc(sizeof(double) * 2 * (n ? n : 1));
    uint32_t *idx = malloc(sizeof(uint32_t) * (n ? n : 1));
    if (tmp == NULL || idx == NULL) {
        free(tmp);
        free(idx);
        return PC_INIT_E_NOMEM;
    }
    ndtri_many(u, n, out, tmp, tmp + n, idx);
    free(tmp);
    free(idx);
    return PC_INIT_OK;
}
#endif
