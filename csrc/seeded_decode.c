/* Decoding seeded tensors (FORMAT.md 4.3-4.5, 5), a run of rows at a time. */
#define _POSIX_C_SOURCE 200809L /* pthreads */
#include "seeded_decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "level_rans.h"
#include "multiset.h"

#if !defined(_WIN32)
#include <pthread.h>
#define PC_THREADS 1
#endif

static int fail(char *err, size_t err_len, int status, const char *fmt, ...) {
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* ------------------------------------------------------------------ working memory */

/* Values of one run: DECODE_CHUNK of permcodec/coding/runs.py, and its bytes per value. */
#define RUN_VALUES ((uint64_t)1 << 13)
#define RUN_BYTES_PER_VALUE 128
#define LANE_GROUP 4
/* a level-rans row in decoding: four lanes' contexts and symbols, and the ranking scratch */
#define LEVEL_ROW_BYTES 40

static uint64_t group_run_values(uint64_t rows, uint64_t m, uint64_t lanes) {
    const uint64_t per = m ? (RUN_VALUES + m - 1) / m : RUN_VALUES;
    const uint64_t want = lanes > per ? lanes : per;
    return (rows < want ? rows : want) * m;
}

uint64_t pc_seeded_working_bytes(const pc_seeded *s) {
    uint64_t run;
    if (s->coding == PC_LEVEL_RANS) /* the tables' model, and a row's scratch */
        return (2 * PC_LEVEL_TABLE_ONE + 4 * PC_LEVEL_MAX_CLASSES) * PC_LEVEL_MAX_CLASSES +
               LEVEL_ROW_BYTES * s->m;
    if (s->coding == PC_ROW_RANS) {
        const uint64_t most = (LANE_GROUP + 1) * RUN_VALUES;
        run = s->m > most ? s->m : most;
        run = s->rows * s->m < run ? s->rows * s->m : run;
    } else {
        const uint64_t lanes = s->exact && s->refine_lanes > s->lanes ? s->refine_lanes : s->lanes;
        run = group_run_values(s->rows, s->m, lanes);
    }
    /* an exact bucket-rans decoder holds the bucket of every value for its refinement */
    const uint64_t buckets = s->coding == PC_BUCKET_RANS && s->exact ? s->rows * s->m : 0;
    return RUN_BYTES_PER_VALUE * run + buckets;
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
    uint64_t *row_counts; /* one row's counts, as pc_row_classes gives them */
    uint64_t cap, cap_rows; /* the values and rows the buffers hold */
} init_run;

/* A levels tensor's classes, the same in every row (pc_levels_classes). */
typedef struct {
    uint64_t n, counts[2 * PC_INIT_MAX_LEVELS + 1];
    uint8_t values[(2 * PC_INIT_MAX_LEVELS + 1) * 8];
    uint16_t class_of_level[2 * PC_INIT_MAX_LEVELS + 1];
} level_classes;

typedef struct {
    const pc_seeded *s;
    size_t width; /* bytes per stored value */
    init_run run;
    const level_classes *levels; /* a levels tensor's classes, else NULL */
    pc_output_fn out_fn;
    void *out_ctx;
    uint8_t *out; /* NULL until the first run has decoded */
} seeded_ctx;

/* The output, asked for at the first write. */
static uint8_t *output(seeded_ctx *c) {
    if (c->out == NULL)
        c->out = c->out_fn(c->out_ctx);
    return c->out;
}

static void free_run(init_run *r) {
    free(r->init);
    free(r->order);
    free(r->counts);
    free(r->values);
    free(r->distinct);
    free(r->row_counts);
    memset(r, 0, sizeof *r);
}

/* The classes of a run of a levels tensor, known from its spec; the order of its
 * positions by value (and their values) only where the coding needs them. */
static int make_level_run(seeded_ctx *c, char *err, size_t err_len) {
    const level_classes *lc = c->levels;
    init_run *r = &c->run;
    const uint64_t m = c->s->m, rows = r->r1 - r->r0;
    const size_t width = c->width;
    r->n = lc->n;
    for (uint64_t i = 0; i < rows; i++) {
        for (uint64_t k = 0; k < lc->n; k++)
            r->counts[i * m + k] = (int64_t)lc->counts[k];
        memcpy(r->values + i * m * width, lc->values, lc->n * width);
        r->distinct[i] = lc->n == m;
    }
    if (c->s->coding != PC_BUCKET_RANS)
        return PC_OK; /* the multiset is all a row-rans or perm-rans decoder needs */
    pc_level_rows *ranks = pc_level_rows_new(&c->s->spec, c->s->k0, c->s->k1, m);
    if (ranks == NULL)
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
    uint16_t *cls = (uint16_t *)(void *)r->row_counts; /* m uint64: room for m classes */
    uint64_t first[2 * PC_INIT_MAX_LEVELS + 1], at = 0; /* each class's first sorted rank */
    for (uint64_t k = 0; k < lc->n; k++) {
        first[k] = at;
        at += lc->counts[k];
    }
    for (uint64_t i = 0; i < rows; i++) {
        pc_level_rows_row(ranks, r->r0 + i, lc->class_of_level, cls);
        uint64_t start[2 * PC_INIT_MAX_LEVELS + 1];
        memcpy(start, first, sizeof(uint64_t) * lc->n);
        uint32_t *order = r->order + i * m;
        uint8_t *init = r->init + i * m * width;
        for (uint64_t j = 0; j < m; j++) { /* by value, then position: a counting sort */
            const uint16_t k = cls[j];
            order[start[k]++] = (uint32_t)j;
            memcpy(init + j * width, lc->values + k * width, width);
        }
    }
    pc_level_rows_free(ranks);
    return PC_OK;
}

/* Regenerate rows [r0, r1) of the init and class them (FORMAT 5.1). */
static int make_run(seeded_ctx *c, uint64_t r0, uint64_t r1, char *err, size_t err_len) {
    const uint64_t m = c->s->m, rows = r1 - r0, n = rows * m;
    init_run *r = &c->run;
    if (n > r->cap || rows > r->cap_rows) { /* the buffers grow to the largest run, once */
        free_run(r);
        r->init = malloc(c->width * (n ? n : 1));
        r->order = malloc(sizeof(uint32_t) * (n ? n : 1));
        r->counts = malloc(sizeof(int64_t) * (n ? n : 1));
        r->values = malloc(c->width * (n ? n : 1));
        r->distinct = malloc(rows ? rows : 1);
        r->row_counts = malloc(sizeof(uint64_t) * (m ? m : 1));
        if (!r->init || !r->order || !r->counts || !r->values || !r->distinct || !r->row_counts)
            return fail(err, err_len, PC_E_NOMEM, "out of memory");
        r->cap = n;
        r->cap_rows = rows;
    }
    r->r0 = r0;
    r->r1 = r1;
    memset(r->counts, 0, sizeof(int64_t) * n);
    if (c->levels != NULL)
        return make_level_run(c, err, err_len);
    if (pc_init_rows(&c->s->spec, c->s->k0, c->s->k1, c->s->dtype, c->s->rows, m, r0, r1,
                     r->init) != PC_INIT_OK)
        return fail(err, err_len, PC_E_NOMEM, "tensor '%s': cannot regenerate its init",
                    c->s->name);
    r->n = 0;
    for (uint64_t i = 0; i < rows; i++) {
        uint64_t got = 0;
        if (pc_row_classes(c->s->dtype, r->init + i * m * c->width, m, r->order + i * m,
                           r->row_counts, r->values + i * m * c->width, &got) != PC_INIT_OK)
            return fail(err, err_len, PC_E_NOMEM, "out of memory");
        for (uint64_t k = 0; k < got; k++)
            r->counts[i * m + k] = (int64_t)r->row_counts[k];
        r->distinct[i] = got == m;
        r->n = got > r->n ? got : r->n;
    }
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

/* Rows of the run from their classes: position j of row i gets values[i][cls[i][j]]. */
static int rebuild(seeded_ctx *c, const int64_t *cls, char *err, size_t err_len) {
    const init_run *r = &c->run;
    const uint64_t rows = r->r1 - r->r0, m = c->s->m;
    const size_t width = c->width;
    uint8_t *out = output(c);
    if (out == NULL)
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
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
    return PC_OK;
}

static int ms_status(int status, const char *name, char *err, size_t err_len) {
    switch (status) {
    case PC_MS_OK:
        return PC_OK;
    case PC_MS_ENDS_EARLY:
        return fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': coded stream ends early", name);
    case PC_MS_NO_MEMORY:
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
    default:
        return fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': coded stream is inconsistent",
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
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
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
            return fail(err, err_len, PC_E_INTEGRITY, empty
                        ? "tensor '%s': an empty tensor has coded data"
                        : "tensor '%s': coder state out of range", name);
    if (empty && st->n_words)
        return fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': an empty tensor has coded data",
                       name);
    return PC_OK;
}

/* Runs of whole groups of `lanes` rows, about RUN_VALUES values each (runs.group_runs). */
static uint64_t group_step(uint64_t lanes, uint64_t m) {
    const uint64_t per = lanes * m != 0 ? RUN_VALUES / (lanes * m) : RUN_VALUES;
    return lanes * (per ? per : 1);
}

/* ------------------------------------------------------------------ perm-rans */

static int decode_perm(seeded_ctx *c, const uint8_t *payload, uint64_t length,
                       char *err, size_t err_len) {
    const pc_seeded *s = c->s;
    const char *name = c->s->name;
    if (length < 8 * s->lanes || (length - 8 * s->lanes) % 4)
        return fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': payload length %llu does not fit %llu lanes", name,
                    (unsigned long long)length, (unsigned long long)s->lanes);
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
            rc = fail(err, err_len, PC_E_NOMEM, "out of memory");
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
            rc = rebuild(c, cls, err, err_len);
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
                        uint64_t l1, const uint64_t *recip, char *err,
                        size_t err_len) {
    const pc_seeded *s = c->s;
    const uint64_t lanes = l1 - l0, m = s->m;
    const uint64_t b0 = lane_bound(l0, s->rows, s->lanes), b1 = lane_bound(l1, s->rows, s->lanes);
    const uint64_t step = lanes > 1 ? b1 - b0 : (RUN_VALUES / m ? RUN_VALUES / m : 1);
    int64_t *bounds = malloc(sizeof(int64_t) * (lanes + 1));
    int64_t *starts = malloc(sizeof(int64_t) * (lanes + 1));
    int64_t *status = malloc(sizeof(int64_t) * lanes), *used = malloc(sizeof(int64_t) * lanes);
    int64_t *cls = malloc(sizeof(int64_t) * (step < b1 - b0 ? step : b1 - b0) * m + 8);
    int rc = bounds && starts && status && used && cls ? PC_OK
                                                       : fail(err, err_len, PC_E_NOMEM,
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
        rc = ms_status(status_all, c->s->name, err, err_len);
        int worst = PC_MS_OK; /* ends early before inconsistent, as the reference says */
        for (uint64_t l = 0; rc == PC_OK && l < lanes; l++)
            if (status[l] == PC_MS_ENDS_EARLY || (status[l] != PC_MS_OK && worst == PC_MS_OK))
                worst = (int)status[l];
        if (rc == PC_OK)
            rc = ms_status(worst, c->s->name, err, err_len);
        if (status_all == PC_MS_OK)
            pos += used[0];
        if (rc == PC_OK)
            rc = rebuild(c, cls, err, err_len);
    }
    free(bounds);
    free(starts);
    free(status);
    free(used);
    free(cls);
    return rc;
}

/* Runs of whole lanes (runs.lane_chunks): about RUN_VALUES values each, in multiples of
 * LANE_GROUP lanes, a lane longer than RUN_VALUES a run of its own. Returns the runs' first
 * lanes and the end (chunks[0 .. *n] holds *n runs), or NULL. */
static uint64_t *lane_chunks(const pc_seeded *s, int64_t *n) {
    const uint64_t lanes = s->lanes, m = s->m;
    uint64_t *at = malloc(sizeof(uint64_t) * (lanes + 1)), count = 0, l0 = 0;
    if (at == NULL)
        return NULL;
    for (uint64_t lane = 0; lane < lanes; lane++) {
        const uint64_t a = lane_bound(l0, s->rows, lanes), b = lane_bound(lane, s->rows, lanes),
                       e = lane_bound(lane + 1, s->rows, lanes);
        if ((e - b) * m > RUN_VALUES) {
            if (l0 < lane)
                at[count++] = l0;
            at[count++] = lane;
            l0 = lane + 1;
            continue;
        }
        const int whole = (lane + 1 - l0) % LANE_GROUP == 0;
        if (((e - a) * m >= RUN_VALUES && whole) || (e - a) * m >= LANE_GROUP * RUN_VALUES) {
            at[count++] = l0;
            l0 = lane + 1;
        }
    }
    if (l0 < lanes)
        at[count++] = l0;
    at[count] = lanes;
    *n = (int64_t)count;
    return at;
}

/* Runs of a level-rans tensor: four lanes each (they decode together), the last what is
 * left; same layout as lane_chunks. */
static uint64_t *level_chunks(const pc_seeded *s, int64_t *n) {
    const uint64_t count = (s->lanes + 3) / 4;
    uint64_t *at = malloc(sizeof(uint64_t) * (count + 1));
    if (at == NULL)
        return NULL;
    for (uint64_t i = 0; i < count; i++)
        at[i] = 4 * i;
    at[count] = s->lanes;
    *n = (int64_t)count;
    return at;
}

/* The runs of lanes of one segmented tensor, shared by the threads that decode them. */
typedef struct {
    seeded_ctx *c;
    stream *st;
    const int64_t *seg;
    const uint64_t *chunks;
    uint64_t n_chunks;
    const uint64_t *recip;
    const pc_level_model *model; /* level-rans; NULL for row-rans */
    uint64_t next; /* the next run to take */
    int stop;      /* a run failed */
#if PC_THREADS
    pthread_mutex_t lock;
#endif
} lanes_job;

static int decode_level_lanes(seeded_ctx *c, const stream *st, const int64_t *seg,
                              const pc_level_model *model, uint64_t l0, uint64_t l1,
                              char *err, size_t err_len);

static int run_chunk(const lanes_job *job, seeded_ctx *c, uint64_t i, char *err,
                     size_t err_len) {
    if (job->model != NULL)
        return decode_level_lanes(c, job->st, job->seg, job->model, job->chunks[i],
                                  job->chunks[i + 1], err, err_len);
    return decode_lanes(c, job->st, job->seg, job->chunks[i], job->chunks[i + 1], job->recip,
                        err, err_len);
}

#if PC_THREADS
/* A thread's share of a job: runs taken in turn, on scratch of its own. */
typedef struct {
    lanes_job *job;
    seeded_ctx c;
    int rc;
    uint64_t failed_at;
    char err[256];
} worker;

static void *work(void *arg) {
    worker *w = arg;
    lanes_job *job = w->job;
    for (;;) {
        pthread_mutex_lock(&job->lock);
        const uint64_t i = job->stop || job->next >= job->n_chunks ? UINT64_MAX : job->next++;
        pthread_mutex_unlock(&job->lock);
        if (i == UINT64_MAX)
            break;
        w->rc = run_chunk(job, &w->c, i, w->err, sizeof w->err);
        if (w->rc != PC_OK) {
            w->failed_at = i;
            pthread_mutex_lock(&job->lock);
            job->stop = 1;
            pthread_mutex_unlock(&job->lock);
            break;
        }
    }
    free_run(&w->c.run);
    return NULL;
}
#endif

/* Every run of the job: the first on this thread (which asks for the output), the rest
 * on up to `threads` threads; the error of the earliest run that failed. */
static int run_chunks(lanes_job *job, int threads, char *err, size_t err_len) {
    int rc = run_chunk(job, job->c, 0, err, err_len);
    job->next = 1;
#if PC_THREADS
    const uint64_t left = job->n_chunks - 1;
    const int n = threads < 2 || left < 2 ? 0 : (uint64_t)threads < left ? threads : (int)left;
    worker *w = n ? calloc((size_t)n, sizeof(worker)) : NULL;
    pthread_t *tid = n ? malloc(sizeof(pthread_t) * (size_t)n) : NULL;
    int started = 0;
    if (rc == PC_OK && w != NULL && tid != NULL && pthread_mutex_init(&job->lock, NULL) == 0) {
        for (; started < n; started++) {
            w[started].job = job;
            w[started].c = *job->c;
            memset(&w[started].c.run, 0, sizeof(init_run));
            if (pthread_create(&tid[started], NULL, work, &w[started]) != 0)
                break;
        }
        uint64_t first = UINT64_MAX;
        for (int t = 0; t < started; t++) {
            pthread_join(tid[t], NULL);
            if (w[t].rc != PC_OK && w[t].failed_at < first) {
                first = w[t].failed_at;
                rc = fail(err, err_len, w[t].rc, "%s", w[t].err);
            }
        }
        pthread_mutex_destroy(&job->lock);
    }
    free(w);
    free(tid);
#else
    (void)threads;
#endif
    for (uint64_t i = job->next; rc == PC_OK && !job->stop && i < job->n_chunks; i++)
        rc = run_chunk(job, job->c, i, err, err_len); /* what no thread took */
    return rc;
}

/* A segmented payload (4.5.1) of `length` bytes: lane states, segment starts seg[0..lanes]
 * (in words) and the words, every length checked against the payload and its lane. */
static int read_segments(const pc_seeded *s, const uint8_t *payload, uint64_t length,
                         stream *st, int64_t **seg_out, char *err, size_t err_len) {
    const char *name = s->name;
    const uint64_t lanes = s->lanes, m = s->m;
    *seg_out = NULL;
    if (length < 12 * lanes || (length - 12 * lanes) % 4)
        return fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': payload length %llu does not fit %llu lanes", name,
                    (unsigned long long)length, (unsigned long long)lanes);
    const uint64_t n_words = (length - 12 * lanes) / 4;
    int64_t *seg = malloc(sizeof(int64_t) * (lanes + 1));
    int rc = seg ? PC_OK : fail(err, err_len, PC_E_NOMEM, "out of memory");
    if (rc == PC_OK) { /* states, then the segments' words (skipping their lengths) */
        rc = read_stream(payload, lanes, 0, st, err, err_len);
        free(st->words);
        st->words = malloc(sizeof(uint32_t) * (n_words ? n_words : 1));
        st->n_words = (int64_t)n_words;
        if (rc == PC_OK && st->words == NULL)
            rc = fail(err, err_len, PC_E_NOMEM, "out of memory");
        for (uint64_t k = 0; rc == PC_OK && k < n_words; k++)
            st->words[k] = pc_le32(payload + 12 * lanes + 4 * k);
    }
    if (seg != NULL)
        seg[0] = 0;
    for (uint64_t l = 0; rc == PC_OK && l < lanes; l++) /* < 2**32 lanes of < 2**32 words */
        seg[l + 1] = (int64_t)((uint64_t)seg[l] + pc_le32(payload + 8 * lanes + 4 * l));
    if (rc == PC_OK && (uint64_t)seg[lanes] != n_words)
        rc = fail(err, err_len, PC_E_FORMAT,
                  "tensor '%s': segment lengths add up to %llu words, the payload holds %llu",
                  name, (unsigned long long)seg[lanes], (unsigned long long)n_words);
    for (uint64_t l = 0; rc == PC_OK && l < lanes; l++) { /* a step reads at most one word */
        const uint64_t rows = lane_bound(l + 1, s->rows, lanes) - lane_bound(l, s->rows, lanes);
        if ((uint64_t)(seg[l + 1] - seg[l]) > rows * m)
            rc = fail(err, err_len, PC_E_FORMAT,
                      "tensor '%s': a lane's segment is longer than its steps", name);
    }
    if (rc == PC_OK)
        rc = check_states(st, s->rows * m == 0, name, err, err_len);
    if (rc != PC_OK)
        free(seg);
    else
        *seg_out = seg;
    return rc;
}

/* Decode a segmented tensor's lanes, in runs of whole lanes on up to `threads` threads:
 * row-rans (model NULL) or level-rans. */
static int decode_segmented(seeded_ctx *c, stream *st, const int64_t *seg,
                            const uint64_t *recip, const pc_level_model *model, int threads,
                            char *err, size_t err_len) {
    int64_t n_chunks = 0;
    uint64_t *chunks = model != NULL ? level_chunks(c->s, &n_chunks) : lane_chunks(c->s, &n_chunks);
    if (chunks == NULL)
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
    lanes_job job;
    memset(&job, 0, sizeof job);
    job.c = c;
    job.st = st;
    job.seg = seg;
    job.chunks = chunks;
    job.n_chunks = (uint64_t)n_chunks;
    job.recip = recip;
    job.model = model;
    const int rc = run_chunks(&job, threads, err, err_len);
    free(chunks);
    return rc;
}

static int decode_row_rans(seeded_ctx *c, const uint8_t *payload, uint64_t length,
                           const uint64_t *recip, int threads, char *err, size_t err_len) {
    stream st;
    int64_t *seg = NULL;
    memset(&st, 0, sizeof st);
    int rc = read_segments(c->s, payload, length, &st, &seg, err, err_len);
    if (rc == PC_OK && c->s->rows * c->s->m != 0)
        rc = decode_segmented(c, &st, seg, recip, NULL, threads, err, err_len);
    free(seg);
    free_stream(&st);
    return rc;
}

/* ------------------------------------------------------------------ level-rans */

/* What a thread decodes level-rans rows with: four lanes' rows at a time. */
typedef struct {
    pc_level_rows *ranks;
    uint16_t *ctx[4], *sym[4];
    uint64_t counts[4][PC_LEVEL_MAX_CLASSES];
} level_scratch;

static void free_level_scratch(level_scratch *w) {
    pc_level_rows_free(w->ranks);
    for (int k = 0; k < 4; k++) {
        free(w->ctx[k]);
        free(w->sym[k]);
    }
}

static int make_level_scratch(const pc_seeded *s, level_scratch *w) {
    memset(w, 0, sizeof *w);
    w->ranks = pc_level_rows_new(&s->spec, s->k0, s->k1, s->m);
    int ok = w->ranks != NULL;
    for (int k = 0; k < 4; k++) {
        w->ctx[k] = malloc(sizeof(uint16_t) * s->m);
        w->sym[k] = malloc(sizeof(uint16_t) * s->m);
        ok = ok && w->ctx[k] != NULL && w->sym[k] != NULL;
    }
    return ok;
}

/* The class of the initial value at each position of row r (6.7, 5.1). */
static void initial_classes(const level_classes *lc, level_scratch *w, uint64_t r,
                            uint16_t *ctx) {
    pc_level_rows_row(w->ranks, r, lc->class_of_level, ctx);
}

/* A decoded row: its multiset checked (4.7.3), its values written. */
static int finish_level_row(seeded_ctx *c, uint8_t *out, uint64_t r, const uint16_t *sym,
                            const uint64_t *counts, char *err, size_t err_len) {
    const level_classes *lc = c->levels;
    const uint64_t m = c->s->m;
    for (uint64_t k = 0; k < lc->n; k++)
        if (counts[k] != lc->counts[k])
            return fail(err, err_len, PC_E_INTEGRITY,
                        "tensor '%s': row %llu is not an arrangement of its initial values",
                        c->s->name, (unsigned long long)r);
    uint8_t *o = out + r * m * c->width;
    switch (c->width) {
    case 4: {
        uint32_t v[PC_LEVEL_MAX_CLASSES];
        memcpy(v, lc->values, 4 * lc->n);
        for (uint64_t j = 0; j < m; j++)
            memcpy(o + 4 * j, &v[sym[j]], 4);
        break;
    }
    default:
        for (uint64_t j = 0; j < m; j++)
            memcpy(o + j * c->width, lc->values + sym[j] * c->width, c->width);
    }
    return PC_OK;
}

/* Decode lanes [l0, l1) of a level-rans tensor (4.7.3): groups of four lanes step
 * together, a row of each at a time; a lane left over, or the rows where lanes of a
 * group differ, one lane at a time. */
static int decode_level_lanes(seeded_ctx *c, const stream *st, const int64_t *seg,
                              const pc_level_model *model, uint64_t l0, uint64_t l1,
                              char *err, size_t err_len) {
    const pc_seeded *s = c->s;
    const uint64_t m = s->m;
    level_scratch w;
    if (m > ((uint64_t)1 << 32)) /* the ranks of a row are 32-bit (pc_level_rows_new) */
        return fail(err, err_len, PC_E_UNSUPPORTED,
                    "tensor '%s': rows of over 2**32 values are beyond this decoder", s->name);
    uint8_t *out = output(c);
    int rc = make_level_scratch(s, &w) && out ? PC_OK
                                              : fail(err, err_len, PC_E_NOMEM, "out of memory");
    for (uint64_t g = l0; rc == PC_OK && g < l1; g += 4) {
        const uint64_t n = l1 - g < 4 ? l1 - g : 4;
        uint64_t x[4], r[4], r_end[4];
        const uint32_t *p[4], *end[4];
        for (uint64_t k = 0; k < 4; k++) { /* lanes past l1 idle: no rows */
            const uint64_t l = g + (k < n ? k : 0);
            x[k] = (uint64_t)st->x[l];
            p[k] = st->words + seg[l];
            end[k] = st->words + seg[l + 1];
            r[k] = lane_bound(l, s->rows, s->lanes);
            r_end[k] = k < n ? lane_bound(l + 1, s->rows, s->lanes) : r[k];
        }
        int together = n == 4;
        while (rc == PC_OK && together && r[0] < r_end[0] && r[1] < r_end[1] &&
               r[2] < r_end[2] && r[3] < r_end[3]) {
            for (int k = 0; k < 4; k++) {
                initial_classes(c->levels, &w, r[k], w.ctx[k]);
                memset(w.counts[k], 0, sizeof w.counts[k]);
            }
            const uint16_t *const ctx[4] = {w.ctx[0], w.ctx[1], w.ctx[2], w.ctx[3]};
            uint64_t *const counts[4] = {w.counts[0], w.counts[1], w.counts[2], w.counts[3]};
            if (pc_level_decode_rows4(model, ctx, m, x, p, end, w.sym, counts) != 0)
                rc = fail(err, err_len, PC_E_INTEGRITY, "tensor '%s': coded stream ends early",
                          s->name);
            for (int k = 0; rc == PC_OK && k < 4; k++)
                rc = finish_level_row(c, out, r[k]++, w.sym[k], w.counts[k], err, err_len);
        }
        for (uint64_t k = 0; rc == PC_OK && k < n; k++) { /* what is left, lane by lane */
            for (; rc == PC_OK && r[k] < r_end[k]; r[k]++) {
                initial_classes(c->levels, &w, r[k], w.ctx[0]);
                memset(w.counts[0], 0, sizeof w.counts[0]);
                if (pc_level_decode_row(model, w.ctx[0], m, &x[k], &p[k], end[k], w.sym[0],
                                        w.counts[0]) != 0)
                    rc = fail(err, err_len, PC_E_INTEGRITY,
                              "tensor '%s': coded stream ends early", s->name);
                else
                    rc = finish_level_row(c, out, r[k], w.sym[0], w.counts[0], err, err_len);
            }
            if (rc == PC_OK && (p[k] != end[k] || x[k] != PC_LEVEL_STATE_LOW))
                rc = fail(err, err_len, PC_E_INTEGRITY,
                          "tensor '%s': coded stream is inconsistent", s->name);
        }
    }
    free_level_scratch(&w);
    return rc;
}

static int decode_level_rans(seeded_ctx *c, const uint8_t *payload, uint64_t length,
                             int threads, char *err, size_t err_len) {
    const pc_seeded *s = c->s;
    const uint64_t classes = c->levels != NULL ? c->levels->n : 0;
    if (s->spec.kind != PC_KIND_LEVELS)
        return fail(err, err_len, PC_E_FORMAT, "tensor '%s': level-rans needs a levels spec",
                    s->name);
    const uint64_t table_bytes = 2 * classes * classes;
    if (length < table_bytes)
        return fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': payload length %llu does not fit its %llu tables", s->name,
                    (unsigned long long)length, (unsigned long long)classes);
    uint16_t *freqs = malloc(sizeof(uint16_t) * (classes ? classes * classes : 1));
    if (freqs == NULL)
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
    for (uint64_t k = 0; k < classes * classes; k++)
        freqs[k] = (uint16_t)(payload[2 * k] | payload[2 * k + 1] << 8);
    pc_level_model model;
    uint64_t bad = 0;
    const int made = pc_level_model_make(freqs, classes, &model, &bad);
    free(freqs);
    if (made > 0)
        return fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': frequency table %llu does not sum to %u", s->name,
                    (unsigned long long)bad, (unsigned)PC_LEVEL_TABLE_ONE);
    if (made < 0)
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
    stream st;
    int64_t *seg = NULL;
    memset(&st, 0, sizeof st);
    int rc = read_segments(s, payload + table_bytes, length - table_bytes, &st, &seg, err,
                           err_len);
    if (rc == PC_OK && s->rows * s->m != 0)
        rc = decode_segmented(c, &st, seg, NULL, &model, threads, err, err_len);
    free(seg);
    free_stream(&st);
    pc_level_model_free(&model);
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
static int rebuild_lossy(seeded_ctx *c, const int64_t *sym, uint64_t k, int64_t *start,
                         char *err, size_t err_len) {
    const init_run *r = &c->run;
    const uint64_t rows = r->r1 - r->r0, m = c->s->m;
    const size_t width = c->width;
    uint8_t *out = output(c);
    if (out == NULL)
        return fail(err, err_len, PC_E_NOMEM, "out of memory");
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
    return PC_OK;
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

static int alloc_scratch(bucket_scratch *w, uint64_t values, uint64_t rows, uint64_t k,
                         int exact) {
    memset(w, 0, sizeof *w);
    w->ctx = malloc(sizeof(int64_t) * (values ? values : 1));
    w->per_bucket = malloc(sizeof(int64_t) * (rows ? rows : 1) * k);
    w->sym = malloc(sizeof(int64_t) * (values ? values : 1));
    w->start = malloc(sizeof(int64_t) * (k + 1));
    w->totals = exact ? malloc(sizeof(int64_t) * (values ? values : 1)) : NULL;
    w->seq = exact ? malloc(sizeof(int64_t) * (values ? values : 1)) : NULL;
    return w->ctx && w->per_bucket && w->sym && w->start && (!exact || (w->totals && w->seq));
}

static void free_scratch(bucket_scratch *w) {
    free(w->ctx);
    free(w->per_bucket);
    free(w->sym);
    free(w->start);
    free(w->totals);
    free(w->seq);
    memset(w, 0, sizeof *w);
}

/* The bucket stream of a tensor (4.4.2), decoded a run of groups at a time: rebuilt at
 * once without a refinement (5.4), else kept in all_sym for it. With threads it runs
 * ahead of the refinement on a thread of its own, and says how far it got in `done`. */
typedef struct {
    seeded_ctx *c;
    seeded_ctx own; /* a thread's own init runs */
    stream *st;
    uint64_t k, step;
    uint8_t *all_sym;
    bucket_scratch w;
    uint64_t done; /* rows of all_sym decoded */
    int finished, rc;
    int stop; /* the refinement failed: the layer need not go on */
    char err[256];
#if PC_THREADS
    pthread_mutex_t lock;
    pthread_cond_t moved;
#endif
} bucket_layer;

static void layer_progress(bucket_layer *a, uint64_t done, int finished, int staged) {
#if PC_THREADS
    if (staged) {
        pthread_mutex_lock(&a->lock);
        a->done = done;
        a->finished = finished;
        pthread_cond_broadcast(&a->moved);
        pthread_mutex_unlock(&a->lock);
        return;
    }
#endif
    (void)staged;
    a->done = done;
    a->finished = finished;
}

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

/* Whether the refinement has failed (then the staged layer stops early). */
static int layer_stopped(bucket_layer *a, int staged) {
#if PC_THREADS
    if (staged) {
        pthread_mutex_lock(&a->lock);
        const int stop = a->stop;
        pthread_mutex_unlock(&a->lock);
        return stop;
    }
#endif
    (void)staged;
    return a->stop;
}

static int bucket_layer_runs(bucket_layer *a, int staged, char *err, size_t err_len) {
    seeded_ctx *c = a->c;
    const pc_seeded *s = c->s;
    const uint64_t m = s->m, k = a->k;
    int rc = PC_OK;
    for (uint64_t r0 = 0; rc == PC_OK && r0 < s->rows && !layer_stopped(a, staged);
         r0 += a->step) {
        const uint64_t r1 = r0 + a->step < s->rows ? r0 + a->step : s->rows, rows = r1 - r0;
        rc = bucket_run(c, r0, r1, k, &a->w, err, err_len);
        if (rc != PC_OK)
            break;
        int64_t used = 0;
        rc = ms_status(pc_ms_decode_ctx(a->st->x, a->st->lanes, a->st->words + a->st->pos,
                                        a->st->n_words - a->st->pos, a->w.ctx, (int64_t)m,
                                        a->w.per_bucket, (int64_t)k, (int64_t)rows, (int64_t)k,
                                        (int64_t)m, s->weights, r1 == s->rows, a->w.sym,
                                        (int64_t)m, &used),
                       s->name, err, err_len);
        a->st->pos += used;
        if (rc == PC_OK && !s->exact)
            rc = rebuild_lossy(c, a->w.sym, k, a->w.start, err, err_len);
        for (uint64_t i = 0; rc == PC_OK && s->exact && i < rows * m; i++)
            a->all_sym[r0 * m + i] = (uint8_t)a->w.sym[i];
        if (rc == PC_OK)
            layer_progress(a, r1, r1 == s->rows, staged);
    }
    a->rc = rc;
    if (rc != PC_OK)
        layer_progress(a, a->done, 1, staged);
    return rc;
}

/* Whether the bucket layer has decoded rows [0, r1) (waiting for it when staged). */
static int layer_has(bucket_layer *a, uint64_t r1, int staged) {
#if PC_THREADS
    if (staged) {
        pthread_mutex_lock(&a->lock);
        while (a->done < r1 && !a->finished)
            pthread_cond_wait(&a->moved, &a->lock);
        const int ok = a->done >= r1;
        pthread_mutex_unlock(&a->lock);
        return ok;
    }
#endif
    (void)staged;
    return a->done >= r1;
}

/* The refinement stream (4.4.3) a run of its groups at a time, each run's buckets taken
 * from the layer, its values placed in the output. */
static int refine_runs(seeded_ctx *c, bucket_layer *a, stream *refine, uint64_t step,
                       bucket_scratch *w, int staged, char *err, size_t err_len) {
    const pc_seeded *s = c->s;
    const uint64_t m = s->m, k = a->k;
    int rc = PC_OK;
    for (uint64_t r0 = 0; rc == PC_OK && r0 < s->rows; r0 += step) {
        const uint64_t r1 = r0 + step < s->rows ? r0 + step : s->rows, rows = r1 - r0;
        if (!layer_has(a, r1, staged))
            return PC_E_INTEGRITY; /* the layer failed: its error is the one reported */
        rc = bucket_run(c, r0, r1, k, w, err, err_len);
        if (rc != PC_OK)
            break;
        bucket_major_totals(w->per_bucket, rows, m, k, w->totals);
        int64_t used = 0;
        rc = ms_status(pc_ms_decode(refine->x, refine->lanes, refine->words + refine->pos,
                                    refine->n_words - refine->pos, c->run.counts,
                                    (int64_t)c->run.n, (int64_t)rows, (int64_t)c->run.n,
                                    w->totals, (int64_t)m, (int64_t)m, r1 == s->rows, NULL,
                                    w->seq, (int64_t)m, &used),
                       s->name, err, err_len);
        refine->pos += used;
        for (uint64_t i = 0; rc == PC_OK && i < rows * m; i++)
            w->sym[i] = a->all_sym[r0 * m + i];
        uint8_t *out = rc == PC_OK ? output(c) : NULL;
        if (rc == PC_OK && out == NULL)
            rc = fail(err, err_len, PC_E_NOMEM, "out of memory");
        if (rc == PC_OK)
            rc = ms_status(pc_ms_place_refined(w->seq, (int64_t)m, w->sym, (int64_t)m,
                                               (int64_t)rows, (int64_t)m, c->run.values,
                                               (int64_t)c->run.n, (int64_t)c->run.n,
                                               (int)c->width, (int64_t)k,
                                               out + r0 * m * c->width, (int64_t)m),
                           s->name, err, err_len);
    }
    return rc;
}

#if PC_THREADS
static void *layer_thread(void *arg) {
    bucket_layer *a = arg;
    bucket_layer_runs(a, 1, a->err, sizeof a->err);
    return NULL;
}

/* The bucket layer on a thread of its own, the refinement on this one behind it; the
 * layer's error first, as when they run one after the other. Returns -1 where no thread
 * could start (nothing decoded). */
static int decode_staged(seeded_ctx *c, bucket_layer *a, stream *refine, uint64_t step,
                         bucket_scratch *w, char *err, size_t err_len) {
    pthread_t tid;
    a->own = *c;
    memset(&a->own.run, 0, sizeof a->own.run);
    a->c = &a->own;
    if (pthread_mutex_init(&a->lock, NULL) != 0)
        return -1;
    if (pthread_cond_init(&a->moved, NULL) != 0) {
        pthread_mutex_destroy(&a->lock);
        return -1;
    }
    int rc = -1;
    if (pthread_create(&tid, NULL, layer_thread, a) == 0) {
        rc = refine_runs(c, a, refine, step, w, 1, err, err_len);
        if (rc != PC_OK) {
            pthread_mutex_lock(&a->lock);
            a->stop = 1;
            pthread_mutex_unlock(&a->lock);
        }
        pthread_join(tid, NULL);
        if (a->rc != PC_OK)
            rc = fail(err, err_len, a->rc, "%s", a->err);
    }
    pthread_cond_destroy(&a->moved);
    pthread_mutex_destroy(&a->lock);
    free_run(&a->own.run);
    a->c = c;
    return rc;
}
#endif

static int decode_bucket(seeded_ctx *c, const uint8_t *payload, uint64_t length,
                         int threads, char *err, size_t err_len) {
    const pc_seeded *s = c->s;
    const char *name = c->s->name;
    const uint64_t m = s->m, k = (uint64_t)1 << s->bits, lanes = s->lanes;
    if (length < 8 * lanes || (!s->has_words && (length - 8 * lanes) % 4))
        return fail(err, err_len, PC_E_FORMAT,
                    "tensor '%s': payload length %llu does not fit %llu lanes", name,
                    (unsigned long long)length, (unsigned long long)lanes);
    if (s->has_words && s->words > (length - 8 * lanes) / 4)
        return fail(err, err_len, PC_E_FORMAT, "tensor '%s': payload too short for %llu words",
                    name, (unsigned long long)s->words);
    const uint64_t n_words = s->has_words ? s->words : (length - 8 * lanes) / 4;
    const uint64_t end = 8 * lanes + 4 * n_words;
    const int empty = s->rows * m == 0;
    stream st, refine;
    memset(&st, 0, sizeof st);
    memset(&refine, 0, sizeof refine);
    int rc = read_stream(payload, lanes, n_words, &st, err, err_len);
    if (rc == PC_OK && empty)
        rc = check_states(&st, 1, name, err, err_len);
    if (rc != PC_OK || empty) {
        free_stream(&st);
        return rc;
    }
    if (!s->exact && end != length)
        rc = fail(err, err_len, PC_E_FORMAT, "tensor '%s': %llu bytes after the stream", name,
                  (unsigned long long)(length - end));
    if (rc == PC_OK && s->exact) {
        const uint64_t rest = length - end;
        if (rest < 8 * s->refine_lanes || (rest - 8 * s->refine_lanes) % 4)
            rc = fail(err, err_len, PC_E_FORMAT,
                      "tensor '%s': payload length %llu does not fit %llu lanes", name,
                      (unsigned long long)length, (unsigned long long)s->refine_lanes);
        if (rc == PC_OK)
            rc = read_stream(payload + end, s->refine_lanes, (rest - 8 * s->refine_lanes) / 4,
                             &refine, err, err_len);
    }
    /* the states last, after every check of the payload's layout, as the reference */
    if (rc == PC_OK)
        rc = check_states(&st, 0, name, err, err_len);
    if (rc == PC_OK && s->exact)
        rc = check_states(&refine, 0, name, err, err_len);
    const uint64_t step = group_step(lanes, m);
    const uint64_t step2 = s->exact ? group_step(s->refine_lanes, m) : 0;
    bucket_layer a;
    memset(&a, 0, sizeof a);
    a.c = c;
    a.st = &st;
    a.k = k;
    a.step = step;
    /* the bucket of every weight, for the whole tensor when a refinement follows */
    a.all_sym = rc == PC_OK && s->exact ? malloc(s->rows * m) : NULL;
    const uint64_t step_b = s->exact ? step2 : step, most = step > step_b ? step : step_b;
    bucket_scratch w;
    memset(&w, 0, sizeof w);
    if (rc == PC_OK && ((s->exact && a.all_sym == NULL) || !alloc_scratch(&a.w, step * m, step, k, 0) ||
                        !alloc_scratch(&w, most * m, most, k, s->exact)))
        rc = fail(err, err_len, PC_E_NOMEM, "out of memory");
    int staged = -1; /* the layer ahead on a thread: only with a refinement, threads, runs */
#if PC_THREADS
    if (rc == PC_OK && s->exact && threads > 1 && s->rows > step)
        staged = decode_staged(c, &a, &refine, step2, &w, err, err_len);
    if (staged != -1)
        rc = staged;
#else
    (void)threads;
#endif
    if (rc == PC_OK && staged == -1) { /* the layer, then the refinement, on this thread */
        rc = bucket_layer_runs(&a, 0, err, err_len);
        if (rc == PC_OK && s->exact)
            rc = refine_runs(c, &a, &refine, step2, &w, 0, err, err_len);
    }
    free(a.all_sym);
    free_scratch(&a.w);
    free_scratch(&w);
    free_stream(&st);
    free_stream(&refine);
    return rc;
}

/* ------------------------------------------------------------------ entry point */

static size_t storage_size(int dtype) {
    return dtype == PC_FLOAT64 ? 8 : dtype == PC_FLOAT32 ? 4 : 2;
}

int pc_seeded_decode(const pc_seeded *s, const uint8_t *payload, uint64_t length,
                     pc_output_fn out, void *out_ctx, int threads, char *err, size_t err_len) {
    seeded_ctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.width = storage_size(s->dtype);
    c.out_fn = out;
    c.out_ctx = out_ctx;
    level_classes levels;
    if (s->spec.kind == PC_KIND_LEVELS && s->m > 0) {
        if (pc_levels_classes(&s->spec, s->dtype, s->m, levels.values, levels.counts,
                              levels.class_of_level, &levels.n) != PC_INIT_OK)
            return fail(err, err_len, PC_E_FORMAT, "tensor '%s': bad levels spec", s->name);
        c.levels = &levels;
    }
    /* divisions by small totals as multiplications, where the tensor is big enough to
     * repay making the table */
    uint64_t *recip = NULL;
    if (s->coding == PC_ROW_RANS && s->rows * s->m >= PC_MS_RECIP_SIZE) {
        recip = malloc(sizeof(uint64_t) * PC_MS_RECIP_SIZE);
        if (recip != NULL)
            pc_ms_recip_fill(recip);
    }
    int rc;
    if (s->coding != PC_ROW_RANS && s->coding != PC_LEVEL_RANS &&
        s->m >= ((uint64_t)1 << PC_PROB_BITS))
        return fail(err, err_len, PC_E_UNSUPPORTED,
                    "tensor '%s': rows of 2**31 values are beyond this decoder", s->name);
    switch (s->coding) {
    case PC_PERM_RANS:
        rc = decode_perm(&c, payload, length, err, err_len);
        break;
    case PC_ROW_RANS:
        rc = decode_row_rans(&c, payload, length, recip, threads, err, err_len);
        break;
    case PC_BUCKET_RANS:
        rc = decode_bucket(&c, payload, length, threads, err, err_len);
        break;
    case PC_LEVEL_RANS:
        rc = decode_level_rans(&c, payload, length, threads, err, err_len);
        break;
    default:
        rc = fail(err, err_len, PC_E_ARGUMENT, "tensor '%s': not a seeded coding", s->name);
    }
    if (rc == PC_OK && s->rows * s->m > 0 && output(&c) == NULL)
        rc = fail(err, err_len, PC_E_NOMEM, "out of memory");
    free_run(&c.run);
    free(recip);
    return rc;
}
