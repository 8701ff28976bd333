/* The door's int8 scan kernel: the rows of an int8 matrix whose dot product with an int8 query
   lies within a band of the largest, with their int32 scores.

   One function, scan(), called from device/scan.py (the GIL is released while it runs). numpy has
   no int8 dot product: widening the rows to float32 first costs more than streaming them. The
   query's values must lie in [-127, 127] (checked: -128 is refused, since vpsignb cannot negate
   it); the rows' values may be any int8: every int16 pair sum below is then at most
   2 * 128 * 127 = 32512 < 32767, so exact, and every int32 total too.

   The band is taken during the pass: each thread keeps its running best and writes a row only
   when its score is at least (running best - band), so the gallery's scores are never written
   out or read again (a superset: the running best never exceeds the final one); the parts are
   then filtered against the final best. Worst case (every row within the band) every row is
   written: the caller's buffers hold one entry per row.

   x86-64: AVX2 (vpsignb/vpmaddubsw/vpmaddwd, chosen once at import by __builtin_cpu_supports,
   with a plain-C fallback); arm64: NEON (vmull/vmlal/vpadal, baseline on every ARMv8 core,
   Raspberry Pi 3/4/5 and Jetson). The scores are exact integer arithmetic: identical on every
   CPU. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define HAVE_AVX2_CLONE 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#define BLOCK 8 /* rows scored together before the band test */

static int32_t dot_plain(const int8_t *r, const int8_t *q, Py_ssize_t dim) {
    int32_t s = 0;
    for (Py_ssize_t k = 0; k < dim; k++) s += (int32_t)r[k] * (int32_t)q[k];
    return s;
}

/* s[0..m) = rows[0..m) . q (m <= BLOCK), without SIMD, or with NEON on arm64 (dim % 16 == 0). */
static inline void block_portable(const int8_t *r, Py_ssize_t m, Py_ssize_t dim, const int8_t *q,
                                  int32_t *s) {
    for (Py_ssize_t j = 0; j < m; j++, r += dim) {
#if defined(__aarch64__)
        if (dim % 16 == 0) {
            int32x4_t acc = vdupq_n_s32(0);
            for (Py_ssize_t k = 0; k < dim; k += 16) {
                int8x16_t a = vld1q_s8(r + k), b = vld1q_s8(q + k);
                int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
                p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b)); /* two products: exact in int16 */
                acc = vpadalq_s16(acc, p);
            }
            s[j] = vaddvq_s32(acc);
            continue;
        }
#endif
        s[j] = dot_plain(r, q, dim);
    }
}

/* One thread's share of a scan: rows [base, base + n) of the gallery; its candidates go to
   idx/scores (its own region of the caller's buffers, one entry per row at most). */
typedef struct {
    const int8_t *rows, *q;
    Py_ssize_t n, dim, base;
    int64_t band;
    int32_t *idx, *scores;
    Py_ssize_t count;
    int32_t best;
} part_t;

typedef void (*block_fn)(const int8_t *, Py_ssize_t, Py_ssize_t, const int8_t *, int32_t *);

/* The band loop every ISA shares (inlined into each ISA's runner, so `block` is too). A block's
   largest score raises the running best first; then every row of the block at or above
   (best - band) is written. */
static inline __attribute__((always_inline)) void band_loop(part_t *p, block_fn block) {
    int32_t best = INT32_MIN, s[BLOCK];
    int64_t floor = INT64_MIN;
    Py_ssize_t c = 0;
    for (Py_ssize_t i = 0; i < p->n; i += BLOCK) {
        Py_ssize_t m = p->n - i < BLOCK ? p->n - i : BLOCK;
        block(p->rows + i * p->dim, m, p->dim, p->q, s);
        int32_t top = s[0];
        for (Py_ssize_t j = 1; j < m; j++) top = s[j] > top ? s[j] : top;
        if (top < floor) continue;
        if (top > best) {
            best = top;
            floor = (int64_t)best - p->band;
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            if (s[j] >= floor) {
                p->idx[c] = (int32_t)(p->base + i + j);
                p->scores[c++] = s[j];
            }
        }
    }
    p->count = c;
    p->best = best;
}

static void run_portable(part_t *p) { band_loop(p, block_portable); }

#ifdef HAVE_AVX2_CLONE
__attribute__((target("avx2"))) static inline __m256i row_acc(const int8_t *r, const int8_t *q,
                                                               Py_ssize_t dim) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (Py_ssize_t k = 0; k < dim; k += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(r + k));
        __m256i b = _mm256_loadu_si256((const __m256i *)(q + k));
        /* |a| (unsigned, 0..128) x sign(a)*b (signed, |b| <= 127): pairwise int16 sums, exact */
        __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    return acc;
}

/* s[0..m) = rows[0..m) . q with AVX2 (dim % 32 == 0): a full block of eight rows is reduced
   together into one store of eight sums. */
__attribute__((target("avx2"))) static inline void block_avx2(const int8_t *r, Py_ssize_t m,
                                                              Py_ssize_t dim, const int8_t *q,
                                                              int32_t *s) {
    if (m == BLOCK) {
        __m256i h0 = _mm256_hadd_epi32(row_acc(r, q, dim), row_acc(r + dim, q, dim));
        __m256i h1 = _mm256_hadd_epi32(row_acc(r + 2 * dim, q, dim), row_acc(r + 3 * dim, q, dim));
        __m256i h2 = _mm256_hadd_epi32(row_acc(r + 4 * dim, q, dim), row_acc(r + 5 * dim, q, dim));
        __m256i h3 = _mm256_hadd_epi32(row_acc(r + 6 * dim, q, dim), row_acc(r + 7 * dim, q, dim));
        __m256i lo = _mm256_hadd_epi32(h0, h1), hi = _mm256_hadd_epi32(h2, h3);
        _mm256_storeu_si256((__m256i *)s, _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20),
                                                           _mm256_permute2x128_si256(lo, hi, 0x31)));
        return;
    }
    for (Py_ssize_t j = 0; j < m; j++) s[j] = dot_plain(r + j * dim, q, dim);
}

__attribute__((target("avx2"))) static void run_avx2(part_t *p) { band_loop(p, block_avx2); }

static int use_avx2; /* set once, at import (detect_isa) */

static const char *detect_isa(void) {
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") != 0;
    return use_avx2 ? "avx2" : "c";
}

static void *run_part(void *arg) {
    part_t *p = (part_t *)arg;
    if (use_avx2 && p->dim % 32 == 0) run_avx2(p);
    else run_portable(p);
    return NULL;
}

#else
static const char *detect_isa(void) {
#if defined(__aarch64__)
    return "neon";
#else
    return "c";
#endif
}

static void *run_part(void *arg) {
    run_portable((part_t *)arg);
    return NULL;
}
#endif

#define MAX_THREADS 8
#define MAX_DIM 65536 /* 65536 * 128 * 127 < 2^31: no int32 total can overflow */

/* The rows split in `threads` contiguous parts: the calling thread scans the first, one POSIX
   thread each the others (started and joined here: no pool, nothing left running; a part whose
   thread cannot start is scanned by the calling thread). Then each part's candidates below
   (best - band) are dropped, the rest moved down in place, in row order. */
static int32_t scan_split(const int8_t *rows, Py_ssize_t n, Py_ssize_t dim, const int8_t *q,
                          int64_t band, int32_t *idx, int32_t *scores, int threads,
                          Py_ssize_t *count) {
    part_t parts[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 0; k < threads; k++) {
        Py_ssize_t lo = n * k / threads, hi = n * (k + 1) / threads;
        parts[k] = (part_t){rows + lo * dim, q, hi - lo, dim, lo, band, idx + lo, scores + lo, 0,
                            INT32_MIN};
    }
    for (int k = 1; k < threads; k++)
        started[k] = pthread_create(&ids[k], NULL, run_part, &parts[k]) == 0;
    run_part(&parts[0]);
    int32_t best = parts[0].best;
    for (int k = 1; k < threads; k++) {
        if (started[k]) pthread_join(ids[k], NULL);
        else run_part(&parts[k]);
        if (parts[k].best > best) best = parts[k].best;
    }
    int64_t floor = (int64_t)best - band;
    Py_ssize_t c = 0;
    for (int k = 0; k < threads; k++) {
        for (Py_ssize_t j = 0; j < parts[k].count; j++) {
            if (parts[k].scores[j] >= floor) { /* c <= this entry's position: a safe move down */
                idx[c] = parts[k].idx[j];
                scores[c++] = parts[k].scores[j];
            }
        }
    }
    *count = c;
    return best;
}

static int overlap(const Py_buffer *a, const Py_buffer *b) {
    const char *x = a->buf, *y = b->buf;
    return x < y + b->len && y < x + a->len;
}

/* scan(rows, query, band, idx, scores, threads=1) -> (best, count): best = the largest of
   rows @ query (int32, exact); idx[:count] = the positions (ascending) of every row whose score
   is >= best - band, scores[:count] their scores; on 1..8 threads.
   rows: C-contiguous int8 (n, dim), 1 <= n < 2^31; query: int8 (dim,) in [-127, 127];
   band >= 0 (>= 2^32 keeps every row); idx, scores: int32 (n,), not overlapping each other or
   rows. */
static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *objs[4];
    long long band;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOLOO|i", &objs[0], &objs[1], &band, &objs[2], &objs[3], &threads))
        return NULL;
    if (threads < 1 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "threads must be 1..8");
        return NULL;
    }
    if (band < 0) {
        PyErr_SetString(PyExc_ValueError, "band must be >= 0");
        return NULL;
    }
    if (band > (1LL << 33)) band = 1LL << 33; /* wider than any two scores differ (|s| < 2^31):
                                                 the same rows, and best - band cannot overflow */
    Py_buffer b[4]; /* rows, query, idx, scores */
    int got = 0;
    for (; got < 4; got++) {
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (got >= 2 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[got], &b[got], flags) < 0) break;
    }
    PyObject *result = NULL;
    if (got == 4) {
        Py_buffer *rows = &b[0], *query = &b[1], *idx = &b[2], *scores = &b[3];
        Py_ssize_t dim = query->len, n = rows->ndim == 2 ? rows->shape[0] : 0;
        if (strcmp(rows->format, "b") || strcmp(query->format, "b") || strcmp(idx->format, "i") ||
            strcmp(scores->format, "i") || rows->ndim != 2 || query->ndim != 1 || idx->ndim != 1 ||
            scores->ndim != 1 || idx->itemsize != 4 || scores->itemsize != 4 || dim <= 0 ||
            dim > MAX_DIM || rows->shape[1] != dim) {
            PyErr_SetString(PyExc_ValueError, "rows (n, dim) int8, query (dim,) int8, idx and "
                                              "scores (n,) int32, 1 <= dim <= 65536");
        } else if (memchr(query->buf, 0x80, (size_t)dim) != NULL) {
            PyErr_SetString(PyExc_ValueError, "query values must lie in [-127, 127]");
        } else if (n < 1 || n > INT32_MAX || idx->shape[0] != n || scores->shape[0] != n) {
            PyErr_SetString(PyExc_ValueError, "1 <= n < 2^31 rows; idx and scores hold one int32 per row");
        } else if (overlap(idx, scores) || overlap(idx, rows) || overlap(scores, rows) ||
                   overlap(idx, query) || overlap(scores, query)) {
            PyErr_SetString(PyExc_ValueError, "idx and scores must not overlap each other or the inputs");
        } else {
            int32_t best;
            Py_ssize_t count;
            Py_BEGIN_ALLOW_THREADS
            best = scan_split((const int8_t *)rows->buf, n, dim, (const int8_t *)query->buf, band,
                              (int32_t *)idx->buf, (int32_t *)scores->buf, threads, &count);
            Py_END_ALLOW_THREADS
            result = Py_BuildValue("(ln)", (long)best, count);
        }
    }
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(rows, query, band, idx, scores, threads=1) -> (best, count): the largest int8 dot "
     "product of a row with query, and in idx[:count] / scores[:count] every row (ascending) "
     "scoring >= best - band, on 1..8 threads."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_int8dot", NULL, -1, methods};

PyMODINIT_FUNC PyInit__int8dot(void) {
    PyObject *m = PyModule_Create(&module);
    /* ISA: the instructions a scan of 128-d rows runs on this CPU ("avx2", "neon" or "c") */
    if (m && PyModule_AddStringConstant(m, "ISA", detect_isa()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
