/* Seeded tensors: their entry fields (FORMAT.md 3.3, 3.5, section 9 items 8-10), checked
 * when a file opens, for csrc/seeded_decode.c to decode.
 */
#include "seeded.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ the spec map */

/* The parameters of each kind (3.5), besides the keys every spec has. */
static const char *const PARAMS[PC_KIND_COUNT][5] = {
    {"a", "b"},
    {"mean", "std"},
    {"mean", "std", "a", "b"},
    {"gain", "mode"},
    {"gain", "mode"},
    {"gain"},
    {"gain"},
    {"value", "random_sign"},
    {"low", "high", "p"},
    {"knots"},
    {"levels", "scale"}};
static const char *const COMMON[] = {"kind", "version", "density", "granularity", "fan_in",
                                     "fan_out"};
#define N_COMMON (sizeof COMMON / sizeof COMMON[0])

static int is_key_of(const pc_mp_value *key, int kind) {
    if (key->type != PC_MP_STR)
        return 0;
    for (size_t i = 0; i < N_COMMON; i++)
        if (pc_mp_str_eq(key, COMMON[i]))
            return 1;
    for (int i = 0; i < 5 && PARAMS[kind][i]; i++)
        if (pc_mp_str_eq(key, PARAMS[kind][i]))
            return 1;
    return 0;
}

/* The map has exactly the keys of its kind (as a set: a repeated key counts once). */
static int has_exactly_the_keys(const pc_mp_value *spec, int kind) {
    for (uint32_t k = 0; k < spec->v.a.len; k++)
        if (!is_key_of(&spec->v.a.items[2 * (size_t)k], kind))
            return 0;
    for (size_t i = 0; i < N_COMMON; i++)
        if (!pc_mp_get(spec, COMMON[i]))
            return 0;
    for (int i = 0; i < 5 && PARAMS[kind][i]; i++)
        if (!pc_mp_get(spec, PARAMS[kind][i]))
            return 0;
    return 1;
}

/* A msgpack number (never a bool) as a double. */
static int number(const pc_mp_value *v, double *out) {
    if (v == NULL)
        return 0;
    switch (v->type) {
    case PC_MP_UINT:
        *out = (double)v->v.u;
        return 1;
    case PC_MP_INT:
        *out = (double)v->v.i;
        return 1;
    case PC_MP_FLOAT:
        *out = v->v.f;
        return 1;
    default:
        return 0;
    }
}

static int param(const pc_mp_value *spec, const char *key, double *out) {
    const pc_mp_value *v = pc_mp_get(spec, key);
    return v == NULL || number(v, out); /* absent: not a parameter of this kind */
}

static int parse_knots(const pc_mp_value *v, pc_seed_fields *s) {
    if (v->type != PC_MP_ARRAY || v->v.a.len < 2 || v->v.a.len > PC_INIT_MAX_KNOTS)
        return 0;
    s->knots = malloc(sizeof(double) * v->v.a.len);
    if (s->knots == NULL)
        return -1;
    for (uint32_t i = 0; i < v->v.a.len; i++)
        if (!number(&v->v.a.items[i], &s->knots[i]))
            return 0;
    s->sd.spec.knots = s->knots;
    s->sd.spec.n_knots = v->v.a.len;
    return 1;
}

/* The types of the spec's fields (3.5); pc_init_check does the values. */
static int parse_spec(const pc_mp_value *map, pc_seed_fields *s, char *err, size_t err_len,
                      const char *name) {
    pc_init_spec *p = &s->sd.spec;
    const pc_mp_value *kind = pc_mp_get(map, "kind");
    p->kind = kind && kind->type == PC_MP_STR
                  ? pc_init_kind((const char *)kind->v.s.ptr, kind->v.s.len)
                  : -1;
    if (p->kind < 0)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad initializer spec: unknown kind",
                       name);
    if (!has_exactly_the_keys(map, p->kind))
        return pc_fail(err, err_len, PC_E_FORMAT,
                       "tensor '%s': bad initializer spec: not the fields of a %s spec", name,
                       pc_init_kind_name(p->kind));
    const pc_mp_value *version = pc_mp_get(map, "version");
    if (version->type == PC_MP_UINT && version->v.u <= INT64_MAX)
        p->spec_version = (int64_t)version->v.u;
    else if (version->type == PC_MP_INT)
        p->spec_version = version->v.i;
    else
        p->spec_version = -1; /* not an int: refused by pc_init_check */
    const pc_mp_value *gran = pc_mp_get(map, "granularity"), *mode = pc_mp_get(map, "mode"),
                      *sign = pc_mp_get(map, "random_sign"), *knots = pc_mp_get(map, "knots");
    int ok = number(pc_mp_get(map, "density"), &p->density) && param(map, "a", &p->a) &&
             param(map, "b", &p->b) && param(map, "mean", &p->mean) &&
             param(map, "std", &p->std) && param(map, "gain", &p->gain) &&
             param(map, "value", &p->value) && param(map, "low", &p->low) &&
             param(map, "high", &p->high) && param(map, "p", &p->p) &&
             param(map, "levels", &p->levels) && param(map, "scale", &p->scale) &&
             pc_get_uint(map, "fan_in", UINT64_MAX, &p->fan_in) &&
             pc_get_uint(map, "fan_out", UINT64_MAX, &p->fan_out) &&
             (pc_mp_str_eq(gran, "row") || pc_mp_str_eq(gran, "tensor"));
    p->tensor_granularity = pc_mp_str_eq(gran, "tensor");
    if (ok && mode) {
        ok = pc_mp_str_eq(mode, "fan_in") || pc_mp_str_eq(mode, "fan_out");
        p->mode_fan_out = pc_mp_str_eq(mode, "fan_out");
    }
    if (ok && sign) {
        ok = sign->type == PC_MP_BOOL;
        p->random_sign = ok && sign->v.b;
    }
    if (ok && knots) {
        const int got = parse_knots(knots, s);
        if (got < 0)
            return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
        ok = got;
    }
    if (!ok)
        return pc_fail(err, err_len, PC_E_FORMAT,
                       "tensor '%s': bad initializer spec: a field of the wrong type", name);
    return PC_OK;
}

/* ------------------------------------------------------------------ the entry */

static int parse_lanes(const pc_mp_value *map, const char *key, uint64_t rows, uint64_t *out) {
    return pc_get_uint(map, key, UINT64_MAX, out) && *out >= 1 && *out <= (rows ? rows : 1);
}

static int parse_bucket(const pc_mp_value *map, pc_seed_fields *s, char *err, size_t err_len,
                        const char *name) {
    uint64_t bits;
    const pc_mp_value *exact = pc_mp_get(map, "exact"), *weights = pc_mp_get(map, "weights"),
                      *words = pc_mp_get(map, "words");
    if (!pc_get_uint(map, "bits", 9, &bits) || bits < 1 || exact == NULL ||
        exact->type != PC_MP_BOOL)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': malformed bucket-rans entry",
                       name);
    s->sd.bits = (int)bits;
    s->sd.exact = exact->v.b;
    const uint64_t n_weights = 2 * ((uint64_t)1 << bits) - 1;
    const uint64_t top_by_m = ((uint64_t)1 << 31) / (s->sd.m ? s->sd.m : 1);
    const uint64_t top = top_by_m < 0xFFFF ? top_by_m : 0xFFFF;
    s->weights = malloc(sizeof(int64_t) * n_weights);
    if (s->weights == NULL)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    int ok = weights == NULL || weights->type == PC_MP_NIL ||
             (weights->type == PC_MP_ARRAY && weights->v.a.len == n_weights);
    for (uint64_t i = 0; i < n_weights; i++) {
        const pc_mp_value *w = weights && weights->type == PC_MP_ARRAY ? &weights->v.a.items[i]
                                                                        : NULL;
        if (w != NULL && ok)
            ok = w->type == PC_MP_UINT && w->v.u >= 1 && w->v.u <= top;
        s->weights[i] = w != NULL && ok ? (int64_t)w->v.u : 1;
    }
    s->sd.weights = s->weights;
    if (!ok)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad context weights for %d bits",
                       name, s->sd.bits);
    s->sd.has_words = words != NULL && words->type != PC_MP_NIL;
    if (s->sd.has_words && !pc_get_uint(map, "words", UINT64_MAX, &s->sd.words))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad words", name);
    if (s->sd.exact && !parse_lanes(map, "refine_lanes", s->sd.rows, &s->sd.refine_lanes))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad refine_lanes", name);
    return PC_OK;
}

int pc_seed_parse(const pc_mp_value *map, const pc_tensor *t, uint32_t version,
                  pc_seed_fields *s, char *err, size_t err_len) {
    const char *name = t->name;
    s->sd.name = name;
    s->sd.coding = t->coding;
    s->sd.dtype = t->dtype;
    if (t->dtype > PC_BFLOAT16)
        return pc_fail(err, err_len, PC_E_FORMAT,
                       "tensor '%s': seeded tensors must be floating point", name);
    const pc_mp_value *spec = pc_mp_get(map, "spec"), *key = pc_mp_get(map, "key");
    if (spec == NULL || spec->type != PC_MP_MAP || key == NULL || key->type != PC_MP_ARRAY ||
        key->v.a.len != 2 || key->v.a.items[0].type != PC_MP_UINT ||
        key->v.a.items[1].type != PC_MP_UINT || key->v.a.items[0].v.u >> 32 ||
        key->v.a.items[1].v.u >> 32)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': malformed seeded entry", name);
    s->sd.k0 = (uint32_t)key->v.a.items[0].v.u;
    s->sd.k1 = (uint32_t)key->v.a.items[1].v.u;
    int rc = parse_spec(spec, s, err, err_len, name);
    if (rc != PC_OK)
        return rc;
    char why[160];
    if (pc_init_check(&s->sd.spec, t->shape, t->ndim, version, why, sizeof why) != PC_INIT_OK)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad initializer spec: %s", name,
                       why);
    pc_init_rows_shape(&s->sd.spec, t->shape, t->ndim, &s->sd.rows, &s->sd.m);
    if (s->sd.m > ((uint64_t)1 << PC_STATE_LOW_BITS))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': rows of %llu values exceed 2**31",
                       name, (unsigned long long)s->sd.m);
    if (!parse_lanes(map, "lanes", s->sd.rows, &s->sd.lanes))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad lanes", name);
    if (t->coding == PC_LEVEL_RANS && s->sd.spec.kind != PC_KIND_LEVELS)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': level-rans needs a levels spec",
                       name);
    return t->coding == PC_BUCKET_RANS ? parse_bucket(map, s, err, err_len, name) : PC_OK;
}

void pc_seed_free(pc_seed_fields *s) {
    free(s->knots);
    free(s->weights);
    memset(s, 0, sizeof *s);
}

