/* A small msgpack reader for untrusted input: see mpack.h.
 *
 * The parser is iterative: an explicit stack of open containers (at most max_depth deep)
 * replaces recursion, so no input and no max_depth can exhaust the C stack. Values are
 * allocated from an arena of blocks, all freed at once by pc_mp_free.
 */
#include "mpack.h"

#include <stdlib.h>
#include <string.h>

/* ---- arena ---------------------------------------------------------------------- */

/* One block of the arena: `cap` values, the first `used` handed out. */
typedef struct pc_mp_block {
    struct pc_mp_block *next;
    size_t used, cap;
    pc_mp_value items[];
} pc_mp_block;

#define PC_MP_BLOCK_VALUES 4096

/* Allocate a block holding `cap` values, or NULL (on failure, or if the size would
   overflow size_t). */
static pc_mp_block *block_new(size_t cap)
{
    pc_mp_block *b;
    if (cap > (SIZE_MAX - sizeof(pc_mp_block)) / sizeof(pc_mp_value))
        return NULL;
    b = malloc(sizeof(pc_mp_block) + cap * sizeof(pc_mp_value));
    if (b) {
        b->next = NULL;
        b->used = 0;
        b->cap = cap;
    }
    return b;
}

/* Hand out n > 0 uninitialised values from the arena whose head is *head, or NULL. A request larger than a standard block gets a block of its own, linked behind
   the head so the head's free space stays in use. */
static pc_mp_value *arena_alloc(pc_mp_block **head, size_t n)
{
    pc_mp_block *b = *head;
    if (b && b->cap - b->used >= n) {
        b->used += n;
        return b->items + (b->used - n);
    }
    b = block_new(n > PC_MP_BLOCK_VALUES ? n : PC_MP_BLOCK_VALUES);
    if (!b)
        return NULL;
    b->used = n;
    if (*head && n > PC_MP_BLOCK_VALUES) {
        b->next = (*head)->next;
        (*head)->next = b;
    } else {
        b->next = *head;
        *head = b;
    }
    return b->items;
}

/* Free every block of the arena starting at b. */
static void arena_free(pc_mp_block *b)
{
    while (b) {
        pc_mp_block *next = b->next;
        free(b);
        b = next;
    }
}

/* ---- input ---------------------------------------------------------------------- */

/* Parser state: the input, the read position, the value budget and the arena. */
typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    size_t items_left; /* values that may still be created (max_items minus those made) */
    size_t max_depth;  /* max_depth of pc_mp_parse, negative taken as 0 */
    pc_mp_block *arena;
} pc_mp_parser;

/* Bytes not yet read. */
static size_t remaining(const pc_mp_parser *p)
{
    return p->len - p->pos;
}

/* Read an n-byte (1..8) big-endian unsigned integer into *out, or PC_MP_ETRUNC. */
static int read_be(pc_mp_parser *p, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    size_t k;
    if (remaining(p) < n)
        return PC_MP_ETRUNC;
    for (k = 0; k < n; k++)
        x = (x << 8) | (uint64_t)p->buf[p->pos + k];
    p->pos += n;
    *out = x;
    return 0;
}

/* ---- scalars -------------------------------------------------------------------- */

/* Store a two's complement integer of 64 bits: non-negative as UINT, negative as INT
   (computed without any implementation-defined conversion). */
static void set_int64_bits(pc_mp_value *v, uint64_t bits)
{
    if (bits <= (uint64_t)INT64_MAX) {
        v->type = PC_MP_UINT;
        v->v.u = bits;
    } else {
        v->type = PC_MP_INT;
        v->v.i = -(int64_t)(~bits) - 1; /* ~bits <= INT64_MAX here */
    }
}

/* Read an n-byte (1, 2, 4 or 8) signed big-endian integer into v. */
static int read_signed(pc_mp_parser *p, size_t n, pc_mp_value *v)
{
    uint64_t x, sign;
    int err = read_be(p, n, &x);
    if (err)
        return err;
    sign = (uint64_t)1 << (8 * n - 1);
    if (n < 8 && (x & sign))
        x |= ~((sign << 1) - 1); /* sign-extend to 64 bits */
    set_int64_bits(v, x);
    return 0;
}

/* Read an n-byte (1, 2, 4 or 8) unsigned big-endian integer into v. */
static int read_unsigned(pc_mp_parser *p, size_t n, pc_mp_value *v)
{
    v->type = PC_MP_UINT;
    return read_be(p, n, &v->v.u);
}

/* Read a float 32 (n == 4) or float 64 (n == 8) into v; the bits are reinterpreted with
   memcpy, and a float 32 is widened to double, which is exact. */
static int read_float(pc_mp_parser *p, size_t n, pc_mp_value *v)
{
    uint64_t x;
    int err = read_be(p, n, &x);
    if (err)
        return err;
    v->type = PC_MP_FLOAT;
    if (n == 4) {
        uint32_t bits = (uint32_t)x;
        float f;
        memcpy(&f, &bits, sizeof f);
        v->v.f = (double)f;
    } else {
        memcpy(&v->v.f, &x, sizeof v->v.f);
    }
    return 0;
}

/* Length in bytes of the UTF-8 sequence starting at s[0..n) (n >= 1), or 0 if it is not
   a valid scalar value: rejects stray continuation bytes, overlongs (C0, C1, E0 80..9F,
   F0 80..8F), surrogates (ED A0..BF), values above U+10FFFF (F4 90.., F5..FF) and
   truncated or malformed continuations. */
static size_t utf8_seq_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    size_t len, k;
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (len == 0 || n < len)
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (k = 2; k < len; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* 1 if s[0..n) is valid UTF-8. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t k;
        if (s[i] < 0x80) { /* fast path for ASCII */
            i++;
            continue;
        }
        k = utf8_seq_len(s + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* Read a STR or BIN body of len bytes (already checked to fit in uint32) into v. */
static int read_bytes(pc_mp_parser *p, uint64_t len, pc_mp_type type, pc_mp_value *v)
{
    if (len > remaining(p))
        return PC_MP_ETRUNC;
    v->type = type;
    v->v.s.ptr = p->buf + p->pos;
    v->v.s.len = (uint32_t)len;
    p->pos += (size_t)len;
    if (type == PC_MP_STR && !utf8_valid(v->v.s.ptr, v->v.s.len))
        return PC_MP_EUTF8;
    return 0;
}

/* Read an n-byte (1, 2 or 4) length, then a STR or BIN body of that length. */
static int read_sized_bytes(pc_mp_parser *p, size_t n, pc_mp_type type, pc_mp_value *v)
{
    uint64_t len;
    int err = read_be(p, n, &len);
    return err ? err : read_bytes(p, len, type, v);
}

/* ---- containers ----------------------------------------------------------------- */

/* Start an ARRAY or MAP of `count` entries (pairs for a MAP) at container depth `depth`
   (1 for the root). Checks the depth, that every child fits in the bytes left (each takes
   at least one), and the value budget, all before allocating the children. */
static int open_container(pc_mp_parser *p, uint64_t count, pc_mp_type type, size_t depth,
                          pc_mp_value *v)
{
    size_t children;
    if (depth > p->max_depth)
        return PC_MP_EDEPTH;
    if (count > remaining(p) || (type == PC_MP_MAP && count > remaining(p) / 2))
        return PC_MP_ETRUNC;
    children = type == PC_MP_MAP ? 2 * (size_t)count : (size_t)count;
    if (children > p->items_left)
        return PC_MP_ENOMEM;
    p->items_left -= children;
    v->type = type;
    v->v.a.len = (uint32_t)count;
    v->v.a.items = NULL;
    if (children > 0) {
        v->v.a.items = arena_alloc(&p->arena, children);
        if (!v->v.a.items)
            return PC_MP_ENOMEM;
    }
    return 0;
}

/* Read an n-byte (2 or 4) count, then open an ARRAY or MAP with it. */
static int read_sized_container(pc_mp_parser *p, size_t n, pc_mp_type type, size_t depth,
                                pc_mp_value *v)
{
    uint64_t count;
    int err = read_be(p, n, &count);
    return err ? err : open_container(p, count, type, depth, v);
}

/* ---- one value ------------------------------------------------------------------ */

/* Read the value starting at the current position into v. A container is only opened
   (its children allocated, not read); `depth` is the depth it would have. */
static int read_value(pc_mp_parser *p, size_t depth, pc_mp_value *v)
{
    uint8_t c;
    if (remaining(p) == 0)
        return PC_MP_ETRUNC;
    c = p->buf[p->pos++];
    if (c <= 0x7F) {
        v->type = PC_MP_UINT;
        v->v.u = c;
        return 0;
    }
    if (c >= 0xE0) {
        v->type = PC_MP_INT;
        v->v.i = (int64_t)c - 256;
        return 0;
    }
    if (c <= 0x8F)
        return open_container(p, c & 0x0F, PC_MP_MAP, depth, v);
    if (c <= 0x9F)
        return open_container(p, c & 0x0F, PC_MP_ARRAY, depth, v);
    if (c <= 0xBF)
        return read_bytes(p, c & 0x1F, PC_MP_STR, v);
    switch (c) {
    case 0xC0: v->type = PC_MP_NIL; return 0;
    case 0xC2: v->type = PC_MP_BOOL; v->v.b = 0; return 0;
    case 0xC3: v->type = PC_MP_BOOL; v->v.b = 1; return 0;
    case 0xC4: return read_sized_bytes(p, 1, PC_MP_BIN, v);
    case 0xC5: return read_sized_bytes(p, 2, PC_MP_BIN, v);
    case 0xC6: return read_sized_bytes(p, 4, PC_MP_BIN, v);
    case 0xCA: return read_float(p, 4, v);
    case 0xCB: return read_float(p, 8, v);
    case 0xCC: return read_unsigned(p, 1, v);
    case 0xCD: return read_unsigned(p, 2, v);
    case 0xCE: return read_unsigned(p, 4, v);
    case 0xCF: return read_unsigned(p, 8, v);
    case 0xD0: return read_signed(p, 1, v);
    case 0xD1: return read_signed(p, 2, v);
    case 0xD2: return read_signed(p, 4, v);
    case 0xD3: return read_signed(p, 8, v);
    case 0xD9: return read_sized_bytes(p, 1, PC_MP_STR, v);
    case 0xDA: return read_sized_bytes(p, 2, PC_MP_STR, v);
    case 0xDB: return read_sized_bytes(p, 4, PC_MP_STR, v);
    case 0xDC: return read_sized_container(p, 2, PC_MP_ARRAY, depth, v);
    case 0xDD: return read_sized_container(p, 4, PC_MP_ARRAY, depth, v);
    case 0xDE: return read_sized_container(p, 2, PC_MP_MAP, depth, v);
    case 0xDF: return read_sized_container(p, 4, PC_MP_MAP, depth, v);
    default: return PC_MP_EBADTYPE; /* 0xC1, ext 0xC7..0xC9, fixext 0xD4..0xD8 */
    }
}

/* ---- the tree ------------------------------------------------------------------- */

/* An open container on the explicit stack: its children and the next one to read. */
typedef struct {
    pc_mp_value *items;
    size_t count, next;
} pc_mp_frame;

/* Number of children of an opened container v (0 for a scalar). */
static size_t child_count(const pc_mp_value *v)
{
    if (v->type == PC_MP_ARRAY)
        return v->v.a.len;
    if (v->type == PC_MP_MAP)
        return 2 * (size_t)v->v.a.len;
    return 0;
}

/* Read the whole tree rooted at `root`, depth-first. `stack` has room for max_depth
   frames (a container at depth d is frame d - 1, and depth never exceeds max_depth). */
static int read_tree(pc_mp_parser *p, pc_mp_frame *stack, pc_mp_value *root)
{
    size_t top = 0; /* frames in use = depth of the containers now open */
    pc_mp_value *v = root;
    for (;;) {
        int err = read_value(p, top + 1, v);
        if (err)
            return err;
        if (child_count(v) > 0) {
            stack[top].items = v->v.a.items;
            stack[top].count = child_count(v);
            stack[top].next = 0;
            top++;
        }
        while (top > 0 && stack[top - 1].next == stack[top - 1].count)
            top--;
        if (top == 0)
            return 0;
        v = &stack[top - 1].items[stack[top - 1].next++];
    }
}

/* Allocate the frame stack for max_depth (at most one frame per input byte is ever
   needed, so it is also capped by len), or NULL. */
static pc_mp_frame *stack_new(size_t max_depth, size_t len)
{
    size_t n = max_depth;
    if (n > len)
        n = len;
    if (n == 0)
        n = 1; /* never used, but keeps malloc(0) out of the picture */
    if (n > SIZE_MAX / sizeof(pc_mp_frame))
        return NULL;
    return malloc(n * sizeof(pc_mp_frame));
}

int pc_mp_parse(const uint8_t *buf, size_t len, int max_depth, size_t max_items, pc_mp_doc *doc)
{
    pc_mp_parser p;
    pc_mp_frame *stack;
    pc_mp_value *root;
    int err;
    if (!doc)
        return PC_MP_ENOMEM;
    doc->root = NULL;
    doc->arena = NULL;
    if (len == 0 || !buf)
        return PC_MP_ETRUNC;
    if (max_items == 0)
        return PC_MP_ENOMEM;
    p.buf = buf;
    p.len = len;
    p.pos = 0;
    p.items_left = max_items - 1; /* the root */
    p.max_depth = max_depth > 0 ? (size_t)max_depth : 0;
    p.arena = NULL;
    stack = stack_new(p.max_depth, len);
    root = stack ? arena_alloc(&p.arena, 1) : NULL;
    err = root ? read_tree(&p, stack, root) : PC_MP_ENOMEM;
    if (!err && p.pos != len)
        err = PC_MP_ETRAIL;
    free(stack);
    if (err) {
        arena_free(p.arena);
        return err;
    }
    doc->root = root;
    doc->arena = p.arena;
    return 0;
}

void pc_mp_free(pc_mp_doc *doc)
{
    if (!doc)
        return;
    arena_free(doc->arena);
    doc->arena = NULL;
    doc->root = NULL;
}

/* ---- helpers -------------------------------------------------------------------- */

int pc_mp_str_eq(const pc_mp_value *v, const char *s)
{
    size_t n;
    if (!v || !s || v->type != PC_MP_STR)
        return 0;
    n = strlen(s);
    return n == v->v.s.len && (n == 0 || memcmp(v->v.s.ptr, s, n) == 0);
}

const pc_mp_value *pc_mp_get(const pc_mp_value *map, const char *key)
{
    uint32_t k;
    if (!map || !key || map->type != PC_MP_MAP)
        return NULL;
    for (k = map->v.a.len; k-- > 0;) /* the last match, as msgpack-python's dicts keep */
        if (pc_mp_str_eq(&map->v.a.items[2 * (size_t)k], key))
            return &map->v.a.items[2 * (size_t)k + 1];
    return NULL;
}
