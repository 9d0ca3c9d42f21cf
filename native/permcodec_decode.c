/* permcodec-decode: a `.perm` file to `.safetensors` (or one tensor's raw bytes), without
 * Python. Tensors are decoded one at a time and streamed to the output, every checksum
 * verified; errors are one line on stderr. Exit codes as the Python CLI's: 0 success,
 * 1 the operation failed, 2 usage error, 3 invalid or damaged input, 4 over the limit.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "permfile.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_DAMAGED 3
#define EXIT_LIMIT 4

static const char USAGE[] =
    "usage: permcodec-decode FILE.perm [-o OUT] [--tensor NAME]... [--list] [--force]\n"
    "                        [--max-bytes N[K|M|G]] [--threads N] [--version]\n"
    "\n"
    "Decode a .perm file without Python: every tensor (or those named) to OUT.safetensors,\n"
    "or one tensor's raw little-endian bytes to OUT when OUT does not end in .safetensors.\n"
    "Every digest is verified; a damaged tensor is never written.\n"
    "\n"
    "  -o OUT            output file (default: FILE with .safetensors for .perm)\n"
    "  --tensor NAME     decode only this tensor (repeatable)\n"
    "  --list            print each tensor's name, dtype, shape and coding, decode nothing\n"
    "  --force           overwrite OUT if it exists\n"
    "  --max-bytes N     refuse files whose decoding takes more memory (default 4G, or\n"
    "                    PERMCODEC_MAX_BYTES)\n"
    "  --threads N       decode lanes on N threads (default 1, or\n"
    "                    PERMCODEC_THREADS)\n"
    "  --version         print the format versions this decoder reads\n"
    "\n"
    "Every coding of format versions 1 to 7 decodes: the seeded tensors of LaPerm-trained\n"
    "models (perm-rans, row-rans, bucket-rans, level-rans) and those of any model\n"
    "(grid-rans, raw-zstd, raw).\n"
    "Exit codes: 0 ok, 1 failed, 2 usage, 3 invalid or damaged file, 4 over --max-bytes.\n";

static int usage_error(const char *msg, const char *arg) {
    fprintf(stderr, "permcodec-decode: error: %s%s%s (see --help)\n", msg, arg ? ": " : "",
            arg ? arg : "");
    return EXIT_USAGE;
}

static int exit_code(int status) {
    switch (status) {
    case PC_E_FORMAT:
    case PC_E_INTEGRITY:
        return EXIT_DAMAGED;
    case PC_E_LIMIT:
        return EXIT_LIMIT;
    case PC_E_ARGUMENT:
        return EXIT_USAGE;
    default:
        return EXIT_FAILED;
    }
}

/* Bytes from "123", "512M", "4G" (powers of 1024); 0 if unreadable. */
static uint64_t parse_size(const char *s) {
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno || end == s || v < 1)
        return 0;
    double scale = 1;
    switch (*end) {
    case 'K': case 'k': scale = 1024.0; end++; break;
    case 'M': case 'm': scale = 1024.0 * 1024; end++; break;
    case 'G': case 'g': scale = 1024.0 * 1024 * 1024; end++; break;
    case 'T': case 't': scale = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i')
        end++;
    if (*end == 'B')
        end++;
    return *end || v * scale >= 1.8e19 ? 0 : (uint64_t)(v * scale);
}

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static const char *safetensors_dtype(int dtype) {
    static const char *const names[] = {"F64", "F32", "F16", "BF16", "I64",
                                        "I32", "I16", "I8",  "U8",   "BOOL"};
    return names[dtype];
}

/* Append `s` to the JSON text in buf as a string literal; returns the new length. */
static size_t json_string(char *buf, size_t at, const char *s) {
    buf[at++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf[at++] = '\\';
            buf[at++] = (char)*p;
        } else if (*p < 0x20) {
            at += (size_t)sprintf(buf + at, "\\u%04x", *p);
        } else {
            buf[at++] = (char)*p;
        }
    }
    buf[at++] = '"';
    return at;
}

/* The safetensors header (JSON, padded with spaces to a multiple of 8) of the chosen
 * tensors, in file order; NULL when out of memory. */
static char *safetensors_header(const pc_file *f, const size_t *chosen, size_t n, size_t *len) {
    size_t room = 64;
    for (size_t k = 0; k < n; k++)
        room += 6 * strlen(pc_tensor_at(f, chosen[k])->name) + 64 + 22 * (PC_MAX_DIMS + 2);
    char *buf = malloc(room);
    if (buf == NULL)
        return NULL;
    size_t at = 0;
    uint64_t offset = 0;
    buf[at++] = '{';
    for (size_t k = 0; k < n; k++) {
        const pc_tensor *t = pc_tensor_at(f, chosen[k]);
        if (k)
            buf[at++] = ',';
        at = json_string(buf, at, t->name);
        at += (size_t)sprintf(buf + at, ":{\"dtype\":\"%s\",\"shape\":[", safetensors_dtype(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            at += (size_t)sprintf(buf + at, "%s%llu", d ? "," : "", (unsigned long long)t->shape[d]);
        at += (size_t)sprintf(buf + at, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)offset, (unsigned long long)(offset + t->nbytes));
        offset += t->nbytes;
    }
    buf[at++] = '}';
    while (at % 8)
        buf[at++] = ' ';
    *len = at;
    return buf;
}

static int write_all(FILE *out, const void *data, size_t len) {
    return len == 0 || fwrite(data, 1, len, out) == len;
}

/* Decode the chosen tensors into `tmp` (safetensors, or one tensor's bytes). */
static int write_output(pc_file *f, const size_t *chosen, size_t n, int safetensors,
                        FILE *out, char *err, size_t err_len) {
    if (safetensors) {
        size_t hlen = 0;
        char *header = safetensors_header(f, chosen, n, &hlen);
        uint8_t prefix[8];
        for (int b = 0; b < 8; b++)
            prefix[b] = (uint8_t)((uint64_t)hlen >> (8 * b));
        const int ok = header && write_all(out, prefix, 8) && write_all(out, header, hlen);
        free(header);
        if (!ok) {
            snprintf(err, err_len, "cannot write the output: %s", strerror(errno));
            return PC_E_IO;
        }
    }
    for (size_t k = 0; k < n; k++) {
        const pc_tensor *t = pc_tensor_at(f, chosen[k]);
        void *buf = malloc(t->nbytes ? t->nbytes : 8);
        if (buf == NULL) {
            snprintf(err, err_len, "out of memory decoding tensor '%s'", t->name);
            return PC_E_NOMEM;
        }
        int rc = pc_decode(f, chosen[k], buf, t->nbytes, err, err_len);
        if (rc == PC_OK && !write_all(out, buf, t->nbytes)) {
            snprintf(err, err_len, "cannot write the output: %s", strerror(errno));
            rc = PC_E_IO;
        }
        free(buf);
        if (rc != PC_OK)
            return rc;
    }
    return PC_OK;
}

static void list_tensors(const pc_file *f) {
    printf("%s: format %u, %zu tensors\n", "file", pc_version(f), pc_count(f));
    for (size_t i = 0; i < pc_count(f); i++) {
        const pc_tensor *t = pc_tensor_at(f, i);
        printf("%s\t%s\t[", t->name, pc_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            printf("%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
        printf("]\t%s\n", pc_coding_name(t->coding));
    }
}

typedef struct {
    const char *input, *output;
    const char **tensors;
    size_t n_tensors;
    int list, force;
    uint64_t max_bytes;
    int threads;
} options;

/* A thread count: a whole number from 1 to 256, or 0 if s is not one. */
static int parse_threads(const char *s) {
    char *end = NULL;
    const long n = strtol(s, &end, 10);
    return end != s && *end == '\0' && n >= 1 && n <= 256 ? (int)n : 0;
}

static int parse_args(int argc, char **argv, options *o) {
    o->tensors = calloc((size_t)argc, sizeof(char *));
    if (o->tensors == NULL)
        return EXIT_FAILED;
    const char *env = getenv("PERMCODEC_MAX_BYTES");
    if (env && *env && (o->max_bytes = parse_size(env)) == 0)
        return usage_error("PERMCODEC_MAX_BYTES is not a size such as 4096, 512M or 16G", env);
    const char *threads = getenv("PERMCODEC_THREADS");
    o->threads = threads && *threads ? parse_threads(threads) : 1;
    if (o->threads == 0)
        return usage_error("PERMCODEC_THREADS is not a whole number from 1 to 256", threads);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int has_value = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            exit(0);
        } else if (strcmp(a, "--version") == 0) {
            puts("permcodec-decode: reads .perm format versions 1 to 7");
            exit(0);
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            if (!has_value)
                return usage_error("-o needs a file name", NULL);
            o->output = argv[++i];
        } else if (strcmp(a, "--tensor") == 0) {
            if (!has_value)
                return usage_error("--tensor needs a name", NULL);
            o->tensors[o->n_tensors++] = argv[++i];
        } else if (strcmp(a, "--max-bytes") == 0) {
            if (!has_value || (o->max_bytes = parse_size(argv[i + 1])) == 0)
                return usage_error("--max-bytes needs a size such as 4096, 512M or 16G",
                                   has_value ? argv[i + 1] : NULL);
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            if (!has_value || (o->threads = parse_threads(argv[i + 1])) == 0)
                return usage_error("--threads needs a whole number from 1 to 256",
                                   has_value ? argv[i + 1] : NULL);
            i++;
        } else if (strcmp(a, "--list") == 0) {
            o->list = 1;
        } else if (strcmp(a, "--force") == 0) {
            o->force = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("no such option", a);
        } else if (o->input == NULL) {
            o->input = a;
        } else {
            return usage_error("one input file only; got another", a);
        }
    }
    return o->input ? 0 : usage_error("missing the input file", NULL);
}

/* The default output: FILE.perm -> FILE.safetensors. */
static char *default_output(const char *input) {
    const size_t n = strlen(input), stem = ends_with(input, ".perm") ? n - 5 : n;
    char *out = malloc(stem + 13);
    if (out != NULL) {
        memcpy(out, input, stem);
        strcpy(out + stem, ".safetensors");
    }
    return out;
}

static int choose(const pc_file *f, const options *o, size_t *chosen, size_t *n) {
    *n = 0;
    if (o->n_tensors == 0) {
        for (size_t i = 0; i < pc_count(f); i++)
            chosen[(*n)++] = i;
        return 0;
    }
    for (size_t k = 0; k < o->n_tensors; k++) {
        const long i = pc_find(f, o->tensors[k]);
        if (i < 0)
            return usage_error("no tensor of that name in the file", o->tensors[k]);
        chosen[(*n)++] = (size_t)i;
    }
    return 0;
}

static int run(const options *o, pc_file *f) {
    char err[512] = "";
    if (o->list) {
        list_tensors(f);
        return 0;
    }
    char *made = o->output ? NULL : default_output(o->input);
    const char *output = o->output ? o->output : made;
    size_t *chosen = malloc(sizeof(size_t) * (pc_count(f) + o->n_tensors + 1)), n = 0;
    int code = output && chosen ? choose(f, o, chosen, &n) : EXIT_FAILED;
    const int safetensors = output && ends_with(output, ".safetensors");
    if (code == 0 && !safetensors && n != 1)
        code = usage_error("raw output holds one tensor: name it with --tensor, or write "
                           ".safetensors", output);
    if (code == 0 && !o->force && access(output, F_OK) == 0)
        code = usage_error("the output exists (use --force to overwrite it)", output);
    char *tmp = NULL;
    if (code == 0 && (tmp = malloc(strlen(output) + 16)) != NULL) {
        sprintf(tmp, "%s.partial", output);
        FILE *out = fopen(tmp, "wb");
        int rc = out ? write_output(f, chosen, n, safetensors, out, err, sizeof err) : PC_E_IO;
        if (out == NULL)
            snprintf(err, sizeof err, "cannot write %s: %s", tmp, strerror(errno));
        if (out != NULL && fclose(out) != 0 && rc == PC_OK) {
            snprintf(err, sizeof err, "cannot write %s: %s", tmp, strerror(errno));
            rc = PC_E_IO;
        }
        if (rc == PC_OK && rename(tmp, output) != 0) {
            snprintf(err, sizeof err, "cannot write %s: %s", output, strerror(errno));
            rc = PC_E_IO;
        }
        if (rc != PC_OK) {
            remove(tmp);
            fprintf(stderr, "permcodec-decode: error: %s\n", err);
            code = exit_code(rc);
        } else {
            printf("wrote %s: %zu tensors\n", output, n);
        }
    }
    free(tmp);
    free(chosen);
    free(made);
    return code;
}

int main(int argc, char **argv) {
    options o;
    memset(&o, 0, sizeof o);
    int code = parse_args(argc, argv, &o);
    if (code == 0) {
        char err[512] = "";
        pc_file *f = NULL;
        const int rc = pc_open(o.input, o.max_bytes, 1, &f, err, sizeof err);
        if (rc != PC_OK) {
            fprintf(stderr, "permcodec-decode: error: %s\n", err);
            code = rc == PC_E_UNSUPPORTED ? EXIT_DAMAGED : exit_code(rc);
        } else {
            pc_set_threads(f, o.threads);
            code = run(&o, f);
            pc_close(f);
        }
    }
    free(o.tensors);
    return code;
}
