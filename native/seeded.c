/* Seeded tensors: their entry fields (FORMAT.md 3.3, 3.5, section 9 items 8-10) and their
 * decoding (4.3-4.5, 5), a run of rows at a time so the working set stays near one run.
 */
#include "seeded.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "multiset.h"

/* ------------------------------------------------------------------ the spec map */

static const char *const KINDS[PC_KIND_COUNT] = {
    "uniform",        "normal",        "trunc_normal", "kaiming_uniform",
    "kaiming_normal", "xavier_uniform", "xavier_normal", "constant",
    "two_value",      "quantile",       "levels"};

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
    s->spec.knots = s->knots;
    s->spec.n_knots = v->v.a.len;
    return 1;
}

/* The types of the spec's fields (3.5); pc_init_check does the values. */
static int parse_spec(const pc_mp_value *map, pc_seed_fields *s, char *err, size_t err_len,
                      const char *name) {
    pc_init_spec *p = &s->spec;
    const pc_mp_value *kind = pc_mp_get(map, "kind");
    p->kind = -1;
    for (int k = 0; kind && k < PC_KIND_COUNT; k++)
        if (pc_mp_str_eq(kind, KINDS[k]))
            p->kind = k;
    if (p->kind < 0)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad initializer spec: unknown kind",
                       name);
    if (!has_exactly_the_keys(map, p->kind))
        return pc_fail(err, err_len, PC_E_FORMAT,
                       "tensor '%s': bad initializer spec: not the fields of a %s spec", name,
                       KINDS[p->kind]);
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
    s->bits = (int)bits;
    s->exact = exact->v.b;
    const uint64_t n_weights = 2 * ((uint64_t)1 << bits) - 1;
    const uint64_t top_by_m = ((uint64_t)1 << 31) / (s->m ? s->m : 1);
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
    if (!ok)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad context weights for %d bits",
                       name, s->bits);
    s->has_words = words != NULL && words->type != PC_MP_NIL;
    if (s->has_words && !pc_get_uint(map, "words", UINT64_MAX, &s->words))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad words", name);
    if (s->exact && !parse_lanes(map, "refine_lanes", s->rows, &s->refine_lanes))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad refine_lanes", name);
    return PC_OK;
}

int pc_seed_parse(const pc_mp_value *map, const pc_tensor *t, uint32_t version,
                  pc_seed_fields *s, char *err, size_t err_len) {
    const char *name = t->name;
    if (t->dtype > PC_BFLOAT16)
        return pc_fail(err, err_len, PC_E_FORMAT,
                       "tensor '%s': seeded tensors must be floating point", name);
    const pc_mp_value *spec = pc_mp_get(map, "spec"), *key = pc_mp_get(map, "key");
    if (spec == NULL || spec->type != PC_MP_MAP || key == NULL || key->type != PC_MP_ARRAY ||
        key->v.a.len != 2 || key->v.a.items[0].type != PC_MP_UINT ||
        key->v.a.items[1].type != PC_MP_UINT || key->v.a.items[0].v.u >> 32 ||
        key->v.a.items[1].v.u >> 32)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': malformed seeded entry", name);
    s->k0 = (uint32_t)key->v.a.items[0].v.u;
    s->k1 = (uint32_t)key->v.a.items[1].v.u;
    int rc = parse_spec(spec, s, err, err_len, name);
    if (rc != PC_OK)
        return rc;
    char why[160];
    if (pc_init_check(&s->spec, t->shape, t->ndim, version, why, sizeof why) != PC_INIT_OK)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad initializer spec: %s", name,
                       why);
    pc_init_rows_shape(&s->spec, t->shape, t->ndim, &s->rows, &s->m);
    if (s->m > ((uint64_t)1 << PC_STATE_LOW_BITS))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': rows of %llu values exceed 2**31",
                       name, (unsigned long long)s->m);
    if (!parse_lanes(map, "lanes", s->rows, &s->lanes))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad lanes", name);
    return t->coding == PC_BUCKET_RANS ? parse_bucket(map, s, err, err_len, name) : PC_OK;
}

void pc_seed_free(pc_seed_fields *s) {
    free(s->knots);
    free(s->weights);
    s->knots = NULL;
    s->weights = NULL;
}

/* ------------------------------------------------------------------ working memory */

/* Values of one run: DECODE_CHUNK of permcodec/coding/runs.py, and its bytes per value. */
#define RUN_VALUES ((uint64_t)1 << 13)
#define RUN_BYTES_PER_VALUE 128
#define LANE_GROUP 4

static uint64_t group_run_values(uint64_t rows, uint64_t m, uint64_t lanes) {
    const uint64_t per = m ? (RUN_VALUES + m - 1) / m : RUN_VALUES;
    const uint64_t want = lanes > per ? lanes : per;
    return (rows < want ? rows : want) * m;
}

uint64_t pc_seed_working_bytes(const pc_seed_fields *s, int coding) {
    uint64_t run;
    if (coding == PC_ROW_RANS) {
        const uint64_t most = (LANE_GROUP + 1) * RUN_VALUES;
        run = s->m > most ? s->m : most;
        run = s->rows * s->m < run ? s->rows * s->m : run;
    } else {
        const uint64_t lanes = s->exact && s->refine_lanes > s->lanes ? s->refine_lanes : s->lanes;
        run = group_run_values(s->rows, s->m, lanes);
    }
    return RUN_BYTES_PER_VALUE * run;
}

/* ------------------------------------------------------------------ runs of rows */

/* What one run of rows [r0, r1) of the init gives a decoder. Arrays hold rows x m
 * entries (rows x k for per_bucket), row-major. */
typedef struct {
    uint64_t r0, r1, n; /* n: the most classes of a row of the run */
    uint8_t *init;      /* the initial values, storage bytes */
    uint32_t *order;    /* order[r][q]: the position of sorted rank q */
    int64_t *counts;    /* counts[r][c], zero past the row's classes */
    uint8_t *values;    /* values[r][c]: class c's storage value */
    uint8_t *distinct;  /* distinct[r]: the row holds m distinct values */
} init_run;

typedef struct {
    const pc_seed_fields *s;
    const pc_tensor *t;
    size_t width; /* bytes per stored value */
    init_run run;
} seeded_ctx;

static void free_run(init_run *r) {
    free(r->init);
    free(r->order);
    free(r->counts);
    free(r->values);
    free(r->distinct);
    memset(r, 0, sizeof *r);
}

/* Regenerate rows [r0, r1) of the init and class them (FORMAT 5.1). */
static int make_run(seeded_ctx *c, uint64_t r0, uint64_t r1, char *err, size_t err_len) {
    const uint64_t m = c->s->m, rows = r1 - r0, n = rows * m;
    init_run *r = &c->run;
    free_run(r);
    r->r0 = r0;
    r->r1 = r1;
    r->init = malloc(c->width * (n ? n : 1));
    r->order = malloc(sizeof(uint32_t) * (n ? n : 1));
    r->counts = calloc(n ? n : 1, sizeof(int64_t));
    r->values = calloc(n ? n : 1, c->width);
    r->distinct = malloc(rows ? rows : 1);
    if (!r->init || !r->order || !r->counts || !r->values || !r->distinct)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    if (pc_init_rows(&c->s->spec, c->s->k0, c->s->k1, c->t->dtype, c->s->rows, m, r0, r1,
                     r->init) != PC_INIT_OK)
        return pc_fail(err, err_len, PC_E_NOMEM, "tensor '%s': cannot regenerate its init",
                       c->t->name);
    uint64_t *counts = malloc(sizeof(uint64_t) * (m ? m : 1));
    if (counts == NULL)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    r->n = 0;
    for (uint64_t i = 0; i < rows; i++) {
        uint64_t got = 0;
        if (pc_row_classes(c->t->dtype, r->init + i * m * c->width, m, r->order + i * m, counts,
                           r->values + i * m * c->width, &got) != PC_INIT_OK) {
            free(counts);
            return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
        }
        for (uint64_t k = 0; k < got; k++)
            r->counts[i * m + k] = (int64_t)counts[k];
        r->distinct[i] = got == m;
        r->n = got > r->n ? got : r->n;
    }
    free(counts);
    return PC_OK;
}

/* counts and values of the run, repacked to rows of n entries (the kernels' layout). */
static void pack_classes(init_run *r, uint64_t m, size_t width) {
    const uint64_t rows = r->r1 - r->r0;
    for (uint64_t i = 1; i < rows && r->n < m; i++) {
        memmove(r->counts + i * r->n, r->counts + i * m, sizeof(int64_t) * r->n);
        memmove(r->values + i * r->n * width, r->values + i * m * width, width * r->n);
    }
}

/* Rows of values from their classes: out row i, position j = values[i][cls[i][j]]. */
static void rebuild(const init_run *r, const int64_t *cls, uint64_t m, size_t width,
                    uint8_t *out) {
    const uint64_t rows = r->r1 - r->r0;
    uint8_t *dst = out + r->r0 * m * width;
    for (uint64_t i = 0; i < rows; i++) {
        const uint8_t *vals = r->values + i * r->n * width;
        const int64_t *row = cls + i * m;
        uint8_t *o = dst + i * m * width;
        switch (width) {
        case 8:
            for (uint64_t j = 0; j < m; j++)
                memcpy(o + 8 * j, vals + 8 * row[j], 8);
            break;
        case 4:
            for (uint64_t j = 0; j < m; j++)
                memcpy(o + 4 * j, vals + 4 * row[j], 4);
            break;
        default:
            for (uint64_t j = 0; j < m; j++)
                memcpy(o + 2 * j, vals + 2 * row[j], 2);
        }
    }
}

static int ms_status(int status, const char *name, char *err, size_t err_len) {
    switch (status) {
    case PC_MS_OK:
        return PC_OK;
    case PC_MS_ENDS_EARLY:
        return pc_fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': coded stream ends early", name);
    case PC_MS_NO_MEMORY:
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    default:
        return pc_fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': coded stream is inconsistent",
                       name);
    }
}

/* ------------------------------------------------------------------ streams */

typedef struct {
    int64_t *x;      /* lane states */
    uint32_t *words; /* the stream's words, host order */
    int64_t lanes, n_words, pos;
} stream;

static void free_stream(stream *st) {
    free(st->x);
    free(st->words);
}

/* An interleaved stream at payload[at]: lanes u64 states, then n_words u32 words. */
static int read_stream(const uint8_t *p, uint64_t lanes, uint64_t n_words, stream *st,
                       char *err, size_t err_len) {
    st->lanes = (int64_t)lanes;
    st->n_words = (int64_t)n_words;
    st->pos = 0;
    st->x = malloc(sizeof(int64_t) * lanes);
    st->words = malloc(sizeof(uint32_t) * (n_words ? n_words : 1));
    if (!st->x || !st->words)
        return pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    for (uint64_t l = 0; l < lanes; l++)
        st->x[l] = (int64_t)pc_le64(p + 8 * l);
    for (uint64_t k = 0; k < n_words; k++)
        st->words[k] = pc_le32(p + 8 * lanes + 4 * k);
    return PC_OK;
}

/* Stored states lie in [2**31, 2**63); an empty tensor's are 2**31 with no words. */
static int check_states(const stream *st, int empty, const char *name, char *err,
                        size_t err_len) {
    const int64_t low = (int64_t)1 << PC_STATE_LOW_BITS;
    for (int64_t l = 0; l < st->lanes; l++)
        if (empty ? st->x[l] != low : st->x[l] < low)
            return pc_fail(err, err_len, empty ? PC_E_INTEGRITY : PC_E_FORMAT,
                           "tensor '%s': a lane state is out of range", name);
    if (empty && st->n_words)
        return pc_fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': an empty tensor has coded data",
                       name);
    return PC_OK;
}

/* Runs of whole groups of `lanes` rows, about RUN_VALUES values each (runs.group_runs). */
static uint64_t group_step(uint64_t lanes, uint64_t m) {
    const uint64_t per = lanes * m != 0 ? RUN_VALUES / (lanes * m) : RUN_VALUES;
    return lanes * (per ? per : 1);
}

/* ------------------------------------------------------------------ perm-rans */

static int decode_perm(seeded_ctx *c, const uint8_t *payload, uint64_t length, uint8_t *out,
                       char *err, size_t err_len) {
    const pc_seed_fields *s = c->s;
    const char *name = c->t->name;
    if (length < 8 * s->lanes || (length - 8 * s->lanes) % 4)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': payload does not fit its lanes",
                       name);
    stream st;
    memset(&st, 0, sizeof st);
    int rc = read_stream(payload, s->lanes, (length - 8 * s->lanes) / 4, &st, err, err_len);
    const int empty = s->rows * s->m == 0;
    if (rc == PC_OK)
        rc = check_states(&st, empty, name, err, err_len);
    int64_t *cls = NULL;
    const uint64_t step = group_step(s->lanes, s->m);
    for (uint64_t r0 = 0; rc == PC_OK && !empty && r0 < s->rows; r0 += step) {
        const uint64_t r1 = r0 + step < s->rows ? r0 + step : s->rows;
        rc = make_run(c, r0, r1, err, err_len);
        if (rc != PC_OK)
            break;
        pack_classes(&c->run, s->m, c->width);
        free(cls);
        cls = malloc(sizeof(int64_t) * (r1 - r0) * s->m);
        if (cls == NULL) {
            rc = pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
            break;
        }
        int64_t used = 0;
        rc = ms_status(pc_ms_decode(st.x, st.lanes, st.words + st.pos, st.n_words - st.pos,
                                    c->run.counts, (int64_t)c->run.n, (int64_t)(r1 - r0),
                                    (int64_t)c->run.n, NULL, 0, (int64_t)s->m, r1 == s->rows,
                                    NULL, cls, (int64_t)s->m, &used),
                       name, err, err_len);
        st.pos += used;
        if (rc == PC_OK)
            rebuild(&c->run, cls, s->m, c->width, out);
    }
    free(cls);
    free_stream(&st);
    return rc;
}

/* ------------------------------------------------------------------ row-rans */

/* Lane l codes rows [b[l], b[l + 1]), b[l] = floor(l R / L) (4.5.2). */
static uint64_t lane_bound(uint64_t l, uint64_t rows, uint64_t lanes) {
#if defined(__SIZEOF_INT128__)
    __extension__ typedef unsigned __int128 wide; /* l * rows may pass 2**64 */
    return (uint64_t)(((wide)l * rows) / lanes);
#else
    return l * rows / lanes; /* only files far over any memory limit reach 2**64 */
#endif
}

/* Decode lanes [l0, l1) together (several whole lanes), or lane l0 alone a sub-run of
 * rows at a time (runs.lane_chunks and runs.row_runs). */
static int decode_lanes(seeded_ctx *c, stream *st, const int64_t *seg, uint64_t l0,
                        uint64_t l1, const uint64_t *recip, uint8_t *out, char *err,
                        size_t err_len) {
    const pc_seed_fields *s = c->s;
    const uint64_t lanes = l1 - l0, m = s->m;
    const uint64_t b0 = lane_bound(l0, s->rows, s->lanes), b1 = lane_bound(l1, s->rows, s->lanes);
    const uint64_t step = lanes > 1 ? b1 - b0 : (RUN_VALUES / m ? RUN_VALUES / m : 1);
    int64_t *bounds = malloc(sizeof(int64_t) * (lanes + 1));
    int64_t *starts = malloc(sizeof(int64_t) * (lanes + 1));
    int64_t *status = malloc(sizeof(int64_t) * lanes), *used = malloc(sizeof(int64_t) * lanes);
    int64_t *cls = malloc(sizeof(int64_t) * (step < b1 - b0 ? step : b1 - b0) * m + 8);
    int rc = bounds && starts && status && used && cls ? PC_OK
                                                       : pc_fail(err, err_len, PC_E_NOMEM,
                                                                 "out of memory");
    int64_t pos = seg[l0]; /* a lone lane's next word */
    for (uint64_t r0 = b0; rc == PC_OK && r0 < b1; r0 += step) {
        const uint64_t r1 = r0 + step < b1 ? r0 + step : b1;
        rc = make_run(c, r0, r1, err, err_len);
        if (rc != PC_OK)
            break;
        pack_classes(&c->run, m, c->width);
        for (uint64_t l = 0; l <= lanes; l++) {
            bounds[l] = lanes > 1 ? (int64_t)(lane_bound(l0 + l, s->rows, s->lanes) - b0)
                                  : (int64_t)(l ? r1 - r0 : 0);
            starts[l] = lanes > 1 ? seg[l0 + l] : (l ? seg[l1] : pos);
        }
        const int status_all =
            pc_ms_decode_rows(st->x + l0, (int64_t)lanes, starts, st->words, c->run.counts,
                              (int64_t)c->run.n, (int64_t)c->run.n, c->run.distinct, bounds,
                              (int64_t)m, r1 == b1, recip, cls, (int64_t)m, status, used);
        rc = ms_status(status_all, c->t->name, err, err_len);
        int worst = PC_MS_OK; /* ends early before inconsistent, as the reference says */
        for (uint64_t l = 0; rc == PC_OK && l < lanes; l++)
            if (status[l] == PC_MS_ENDS_EARLY || (status[l] != PC_MS_OK && worst == PC_MS_OK))
                worst = (int)status[l];
        if (rc == PC_OK)
            rc = ms_status(worst, c->t->name, err, err_len);
        pos += used[0];
        if (rc == PC_OK)
            rebuild(&c->run, cls, m, c->width, out);
    }
    free(bounds);
    free(starts);
    free(status);
    free(used);
    free(cls);
    return rc;
}

static int decode_row_rans(seeded_ctx *c, const uint8_t *payload, uint64_t length,
                           const uint64_t *recip, uint8_t *out, char *err, size_t err_len) {
    const pc_seed_fields *s = c->s;
    const char *name = c->t->name;
    const uint64_t lanes = s->lanes, m = s->m;
    if (length < 12 * lanes || (length - 12 * lanes) % 4)
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': payload does not fit its lanes",
                       name);
    const uint64_t n_words = (length - 12 * lanes) / 4;
    int64_t *seg = malloc(sizeof(int64_t) * (lanes + 1));
    stream st;
    memset(&st, 0, sizeof st);
    int rc = seg ? PC_OK : pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    if (rc == PC_OK) { /* states, then the segments' words (skipping their lengths) */
        rc = read_stream(payload, lanes, 0, &st, err, err_len);
        free(st.words);
        st.words = malloc(sizeof(uint32_t) * (n_words ? n_words : 1));
        st.n_words = (int64_t)n_words;
        if (rc == PC_OK && st.words == NULL)
            rc = pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
        for (uint64_t k = 0; rc == PC_OK && k < n_words; k++)
            st.words[k] = pc_le32(payload + 12 * lanes + 4 * k);
    }
    seg[0] = 0;
    for (uint64_t l = 0; rc == PC_OK && l < lanes; l++) {
        const uint64_t len = pc_le32(payload + 8 * lanes + 4 * l);
        const uint64_t steps = (lane_bound(l + 1, s->rows, lanes) - lane_bound(l, s->rows, lanes)) * m;
        seg[l + 1] = seg[l] + (int64_t)len;
        if (len > steps)
            rc = pc_fail(err, err_len, PC_E_FORMAT,
                         "tensor '%s': a lane's segment is longer than its steps", name);
    }
    if (rc == PC_OK && (uint64_t)seg[lanes] != n_words)
        rc = pc_fail(err, err_len, PC_E_FORMAT,
                     "tensor '%s': segment lengths do not add up to the payload's words", name);
    const int empty = s->rows * m == 0;
    if (rc == PC_OK)
        rc = check_states(&st, empty, name, err, err_len);
    /* runs of whole lanes (runs.lane_chunks): about RUN_VALUES values, in multiples of
     * LANE_GROUP lanes, a lane longer than RUN_VALUES a run of its own */
    uint64_t l0 = 0;
    for (uint64_t lane = 0; rc == PC_OK && !empty && lane < lanes; lane++) {
        const uint64_t a = lane_bound(l0, s->rows, lanes), b = lane_bound(lane, s->rows, lanes),
                       e = lane_bound(lane + 1, s->rows, lanes);
        if ((e - b) * m > RUN_VALUES) {
            if (l0 < lane)
                rc = decode_lanes(c, &st, seg, l0, lane, recip, out, err, err_len);
            if (rc == PC_OK)
                rc = decode_lanes(c, &st, seg, lane, lane + 1, recip, out, err, err_len);
            l0 = lane + 1;
            continue;
        }
        const uint64_t size = (e - a) * m;
        const int whole = (lane + 1 - l0) % LANE_GROUP == 0;
        if ((size >= RUN_VALUES && whole) || size >= LANE_GROUP * RUN_VALUES) {
            rc = decode_lanes(c, &st, seg, l0, lane + 1, recip, out, err, err_len);
            l0 = lane + 1;
        }
    }
    if (rc == PC_OK && !empty && l0 < lanes)
        rc = decode_lanes(c, &st, seg, l0, lanes, recip, out, err, err_len);
    free(seg);
    free_stream(&st);
    return rc;
}

/* ------------------------------------------------------------------ bucket-rans */

/* The bucket of every position's initial value (ctx, rows x m) and the values per bucket
 * (per_bucket, rows x k) of the run: class v goes to bucket floor(q_v k / m), q_v its
 * first sorted rank (5.3). */
static void init_buckets(const init_run *r, uint64_t m, uint64_t k, int64_t *ctx,
                         int64_t *per_bucket) {
    const uint64_t rows = r->r1 - r->r0;
    memset(per_bucket, 0, sizeof(int64_t) * rows * k);
    for (uint64_t i = 0; i < rows; i++) {
        const int64_t *counts = r->counts + i * r->n;
        const uint32_t *order = r->order + i * m;
        uint64_t q = 0;
        for (uint64_t v = 0; q < m; v++) {
            const int64_t b = (int64_t)(q * k / m);
            per_bucket[i * k + (uint64_t)b] += counts[v];
            for (uint64_t t = q; t < q + (uint64_t)counts[v]; t++)
                ctx[i * m + order[t]] = b;
            q += (uint64_t)counts[v];
        }
    }
}

/* Rows rebuilt from their buckets alone (5.4): inside a bucket, positions take the
 * bucket's values in the order of their initial ranks. */
static void rebuild_lossy(const init_run *r, const int64_t *sym, uint64_t m, uint64_t k,
                          size_t width, int64_t *start, uint8_t *out) {
    const uint64_t rows = r->r1 - r->r0;
    for (uint64_t i = 0; i < rows; i++) {
        const int64_t *row = sym + i * m;
        const uint32_t *order = r->order + i * m;
        const uint8_t *init = r->init + i * m * width;
        uint8_t *o = out + (r->r0 + i) * m * width;
        memset(start, 0, sizeof(int64_t) * (k + 1));
        for (uint64_t j = 0; j < m; j++)
            start[row[j] + 1]++;
        for (uint64_t b = 0; b < k; b++)
            start[b + 1] += start[b];
        for (uint64_t q = 0; q < m; q++) { /* positions in initial-rank order */
            const uint32_t p = order[q];
            const int64_t slot = start[row[p]]++;
            memcpy(o + (size_t)p * width, init + (size_t)order[slot] * width, width);
        }
    }
}

/* Remaining count of the current bucket at every step of a bucket-major row. */
static void bucket_major_totals(const int64_t *per_bucket, uint64_t rows, uint64_t m,
                                uint64_t k, int64_t *totals) {
    for (uint64_t i = 0; i < rows; i++) {
        int64_t end = 0, j = 0;
        for (uint64_t b = 0; b < k; b++) {
            end += per_bucket[i * k + b];
            for (; j < end; j++)
                totals[i * m + (uint64_t)j] = end - j;
        }
    }
}

typedef struct {
    int64_t *ctx, *per_bucket, *sym, *start, *totals, *seq;
} bucket_scratch;

/* The init of rows [r0, r1), its classes and buckets. */
static int bucket_run(seeded_ctx *c, uint64_t r0, uint64_t r1, uint64_t k, bucket_scratch *w,
                      char *err, size_t err_len) {
    const int rc = make_run(c, r0, r1, err, err_len);
    if (rc == PC_OK) {
        pack_classes(&c->run, c->s->m, c->width);
        init_buckets(&c->run, c->s->m, k, w->ctx, w->per_bucket);
    }
    return rc;
}

static int decode_bucket(seeded_ctx *c, const uint8_t *payload, uint64_t length, uint8_t *out,
                         char *err, size_t err_len) {
    const pc_seed_fields *s = c->s;
    const char *name = c->t->name;
    const uint64_t m = s->m, k = (uint64_t)1 << s->bits, lanes = s->lanes;
    if (length < 8 * lanes || (!s->has_words && (length - 8 * lanes) % 4) ||
        (s->has_words && s->words > (length - 8 * lanes) / 4))
        return pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': payload does not fit its streams",
                       name);
    const uint64_t n_words = s->has_words ? s->words : (length - 8 * lanes) / 4;
    const uint64_t end = 8 * lanes + 4 * n_words;
    const int empty = s->rows * m == 0;
    stream st, refine;
    memset(&st, 0, sizeof st);
    memset(&refine, 0, sizeof refine);
    int rc = read_stream(payload, lanes, n_words, &st, err, err_len);
    if (rc == PC_OK)
        rc = check_states(&st, empty, name, err, err_len);
    if (rc != PC_OK || empty) {
        free_stream(&st);
        return rc;
    }
    if (!s->exact && end != length)
        rc = pc_fail(err, err_len, PC_E_FORMAT, "tensor '%s': bytes after the stream", name);
    if (rc == PC_OK && s->exact) {
        const uint64_t rest = length - end;
        if (rest < 8 * s->refine_lanes || (rest - 8 * s->refine_lanes) % 4)
            rc = pc_fail(err, err_len, PC_E_FORMAT,
                         "tensor '%s': payload does not fit its refinement lanes", name);
        if (rc == PC_OK)
            rc = read_stream(payload + end, s->refine_lanes, (rest - 8 * s->refine_lanes) / 4,
                             &refine, err, err_len);
        if (rc == PC_OK)
            rc = check_states(&refine, 0, name, err, err_len);
    }
    /* the bucket of every weight, for the whole tensor when a refinement follows */
    uint8_t *all_sym = s->exact ? malloc(s->rows * m) : NULL;
    const uint64_t step = group_step(lanes, m);
    const uint64_t step2 = s->exact ? group_step(s->refine_lanes, m) : 0;
    const uint64_t most = (step > step2 ? step : step2) * m;
    bucket_scratch w;
    w.ctx = malloc(sizeof(int64_t) * most);
    w.per_bucket = malloc(sizeof(int64_t) * (step > step2 ? step : step2) * k);
    w.sym = malloc(sizeof(int64_t) * most);
    w.start = malloc(sizeof(int64_t) * (k + 1));
    w.totals = s->exact ? malloc(sizeof(int64_t) * most) : NULL;
    w.seq = s->exact ? malloc(sizeof(int64_t) * most) : NULL;
    if (rc == PC_OK && (!w.ctx || !w.per_bucket || !w.sym || !w.start ||
                        (s->exact && (!all_sym || !w.totals || !w.seq))))
        rc = pc_fail(err, err_len, PC_E_NOMEM, "out of memory");
    for (uint64_t r0 = 0; rc == PC_OK && r0 < s->rows; r0 += step) {
        const uint64_t r1 = r0 + step < s->rows ? r0 + step : s->rows, rows = r1 - r0;
        rc = bucket_run(c, r0, r1, k, &w, err, err_len);
        if (rc != PC_OK)
            break;
        int64_t used = 0;
        rc = ms_status(pc_ms_decode_ctx(st.x, st.lanes, st.words + st.pos, st.n_words - st.pos,
                                        w.ctx, (int64_t)m, w.per_bucket, (int64_t)k,
                                        (int64_t)rows, (int64_t)k, (int64_t)m, s->weights,
                                        r1 == s->rows, w.sym, (int64_t)m, &used),
                       name, err, err_len);
        st.pos += used;
        if (rc == PC_OK && !s->exact)
            rebuild_lossy(&c->run, w.sym, m, k, c->width, w.start, out);
        for (uint64_t i = 0; rc == PC_OK && s->exact && i < rows * m; i++)
            all_sym[r0 * m + i] = (uint8_t)w.sym[i];
    }
    for (uint64_t r0 = 0; rc == PC_OK && s->exact && r0 < s->rows; r0 += step2) {
        const uint64_t r1 = r0 + step2 < s->rows ? r0 + step2 : s->rows, rows = r1 - r0;
        rc = bucket_run(c, r0, r1, k, &w, err, err_len);
        if (rc != PC_OK)
            break;
        bucket_major_totals(w.per_bucket, rows, m, k, w.totals);
        int64_t used = 0;
        rc = ms_status(pc_ms_decode(refine.x, refine.lanes, refine.words + refine.pos,
                                    refine.n_words - refine.pos, c->run.counts, (int64_t)c->run.n,
                                    (int64_t)rows, (int64_t)c->run.n, w.totals, (int64_t)m,
                                    (int64_t)m, r1 == s->rows, NULL, w.seq, (int64_t)m, &used),
                       name, err, err_len);
        refine.pos += used;
        for (uint64_t i = 0; rc == PC_OK && i < rows * m; i++)
            w.sym[i] = all_sym[r0 * m + i];
        if (rc == PC_OK)
            rc = ms_status(pc_ms_place_refined(w.seq, (int64_t)m, w.sym, (int64_t)m,
                                               (int64_t)rows, (int64_t)m, c->run.values,
                                               (int64_t)c->run.n, (int64_t)c->run.n,
                                               (int)c->width, (int64_t)k,
                                               out + r0 * m * c->width, (int64_t)m),
                           name, err, err_len);
    }
    free(all_sym);
    free(w.ctx);
    free(w.per_bucket);
    free(w.sym);
    free(w.start);
    free(w.totals);
    free(w.seq);
    free_stream(&st);
    free_stream(&refine);
    return rc;
}

/* ------------------------------------------------------------------ entry point */

int pc_seed_decode(const pc_seed_fields *s, const pc_tensor *t, const uint8_t *payload,
                   uint64_t length, uint8_t *out, char *err, size_t err_len) {
    seeded_ctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.t = t;
    c.width = pc_dtype_size(t->dtype);
    /* divisions by small totals as multiplications, where the tensor is big enough to
     * repay making the table */
    uint64_t *recip = NULL;
    if (t->coding == PC_ROW_RANS && s->rows * s->m >= PC_MS_RECIP_SIZE) {
        recip = malloc(sizeof(uint64_t) * PC_MS_RECIP_SIZE);
        if (recip != NULL)
            pc_ms_recip_fill(recip);
    }
    int rc;
    switch (t->coding) {
    case PC_PERM_RANS:
        rc = decode_perm(&c, payload, length, out, err, err_len);
        break;
    case PC_ROW_RANS:
        rc = decode_row_rans(&c, payload, length, recip, out, err, err_len);
        break;
    default:
        rc = decode_bucket(&c, payload, length, out, err, err_len);
    }
    free_run(&c.run);
    free(recip);
    return rc;
}
