/* The door's int8 scan kernel: out[i] = rows[i] . query (int32) for int8 rows, and the largest.

   One function, called from device/scan.py on a slice of the gallery's int8 copy (one call per
   thread; the GIL is released while it runs). numpy has no int8 dot product: widening the rows to
   float32 first costs more than streaming them. The query's values must lie in [-127, 127]
   (checked: -128 is refused, since vpsignb cannot negate it); the rows' values may be any int8:
   every int16 pair sum below is then at most 2 * 128 * 127 = 32512 < 32767, so exact, and every
   int32 total too.

   x86-64: AVX2 (vpsignb/vpmaddubsw/vpmaddwd, chosen at run time by __builtin_cpu_supports, with a
   plain-C fallback); arm64: NEON (vmull/vmlal/vpadal, baseline on every ARMv8 core, Raspberry Pi
   3/4/5 and Jetson). The result is exact integer arithmetic: identical on every CPU. */

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

static int32_t dot_plain(const int8_t *r, const int8_t *q, Py_ssize_t dim) {
    int32_t s = 0;
    for (Py_ssize_t k = 0; k < dim; k++) s += (int32_t)r[k] * (int32_t)q[k];
    return s;
}

static int32_t scan_plain(const int8_t *rows, Py_ssize_t n, Py_ssize_t dim, const int8_t *q,
                          int32_t *out) {
    int32_t best = INT32_MIN;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t s = dot_plain(rows + i * dim, q, dim);
        out[i] = s;
        if (s > best) best = s;
    }
    return best;
}

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

__attribute__((target("avx2"))) static int32_t scan_avx2(const int8_t *rows, Py_ssize_t n,
                                                          Py_ssize_t dim, const int8_t *q,
                                                          int32_t *out) {
    __m256i best = _mm256_set1_epi32(INT32_MIN);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) { /* eight rows, reduced together: one store of eight sums */
        const int8_t *r = rows + i * dim;
        __m256i h0 = _mm256_hadd_epi32(row_acc(r, q, dim), row_acc(r + dim, q, dim));
        __m256i h1 = _mm256_hadd_epi32(row_acc(r + 2 * dim, q, dim), row_acc(r + 3 * dim, q, dim));
        __m256i h2 = _mm256_hadd_epi32(row_acc(r + 4 * dim, q, dim), row_acc(r + 5 * dim, q, dim));
        __m256i h3 = _mm256_hadd_epi32(row_acc(r + 6 * dim, q, dim), row_acc(r + 7 * dim, q, dim));
        __m256i lo = _mm256_hadd_epi32(h0, h1), hi = _mm256_hadd_epi32(h2, h3);
        __m256i s = _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20),
                                     _mm256_permute2x128_si256(lo, hi, 0x31));
        _mm256_storeu_si256((__m256i *)(out + i), s);
        best = _mm256_max_epi32(best, s);
    }
    int32_t lanes[8], top = INT32_MIN;
    _mm256_storeu_si256((__m256i *)lanes, best);
    for (int k = 0; k < 8; k++) if (lanes[k] > top) top = lanes[k];
    int32_t tail = scan_plain(rows + i * dim, n - i, dim, q, out + i);
    return tail > top ? tail : top;
}

static int use_avx2; /* set once, at import (detect_isa) */

static const char *detect_isa(void) {
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") != 0;
    return use_avx2 ? "avx2" : "c";
}

static int32_t scan_rows(const int8_t *rows, Py_ssize_t n, Py_ssize_t dim, const int8_t *q,
                         int32_t *out) {
    if (use_avx2 && dim % 32 == 0) return scan_avx2(rows, n, dim, q, out);
    return scan_plain(rows, n, dim, q, out);
}

#elif defined(__aarch64__)
static int32_t scan_rows(const int8_t *rows, Py_ssize_t n, Py_ssize_t dim, const int8_t *q,
                         int32_t *out) {
    if (dim % 16) return scan_plain(rows, n, dim, q, out);
    int32_t best = INT32_MIN;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int8_t *r = rows + i * dim;
        int32x4_t acc = vdupq_n_s32(0);
        for (Py_ssize_t k = 0; k < dim; k += 16) {
            int8x16_t a = vld1q_s8(r + k), b = vld1q_s8(q + k);
            int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b)); /* two products: exact in int16 */
            acc = vpadalq_s16(acc, p);
        }
        int32_t s = vaddvq_s32(acc);
        out[i] = s;
        if (s > best) best = s;
    }
    return best;
}
static const char *detect_isa(void) { return "neon"; }

#else
#define scan_rows scan_plain
static const char *detect_isa(void) { return "c"; }
#endif

/* One thread's share of a scan. */
typedef struct {
    const int8_t *rows, *q;
    Py_ssize_t n, dim;
    int32_t *out, best;
} part_t;

static void *run_part(void *arg) {
    part_t *p = (part_t *)arg;
    p->best = scan_rows(p->rows, p->n, p->dim, p->q, p->out);
    return NULL;
}

#define MAX_THREADS 8
#define MAX_DIM 65536 /* 65536 * 128 * 127 < 2^31: no int32 total can overflow */

/* The rows split in `threads` contiguous parts: the calling thread scans the first, one POSIX
   thread each the others (started and joined here: no pool, nothing left running). A part whose
   thread cannot start is scanned by the calling thread. */
static int32_t scan_split(const int8_t *rows, Py_ssize_t n, Py_ssize_t dim, const int8_t *q,
                          int32_t *out, int threads) {
    part_t parts[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 0; k < threads; k++) {
        Py_ssize_t lo = n * k / threads, hi = n * (k + 1) / threads;
        parts[k] = (part_t){rows + lo * dim, q, hi - lo, dim, out + lo, INT32_MIN};
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
    return best;
}

/* scan(rows, query, out, start, stop, threads=1) -> int: out[start:stop] = rows[start:stop] @
   query, and the largest of them, on `threads` threads (1..8).
   rows: C-contiguous int8 (n, dim); query: int8 (dim,) in [-127, 127]; out: int32 (n,). */
static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *rows_obj, *query_obj, *out_obj;
    Py_ssize_t start, stop;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOOnn|i", &rows_obj, &query_obj, &out_obj, &start, &stop, &threads))
        return NULL;
    if (threads < 1 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "threads must be 1..8");
        return NULL;
    }
    Py_buffer rows, query, out;
    if (PyObject_GetBuffer(rows_obj, &rows, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(query_obj, &query, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&rows);
        PyBuffer_Release(&query);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t dim = query.len;
    if (strcmp(rows.format, "b") || strcmp(query.format, "b") || strcmp(out.format, "i") ||
        rows.ndim != 2 || query.ndim != 1 || out.ndim != 1 || out.itemsize != 4 || dim <= 0 ||
        dim > MAX_DIM || rows.shape[1] != dim) {
        PyErr_SetString(PyExc_ValueError,
                        "rows (n, dim) int8, query (dim,) int8, out (n,) int32, 1 <= dim <= 65536");
    } else if (memchr(query.buf, 0x80, (size_t)dim) != NULL) {
        PyErr_SetString(PyExc_ValueError, "query values must lie in [-127, 127]");
    } else if (out.len / 4 != rows.shape[0] || start < 0 || stop < start || stop > rows.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "out must hold one int32 per row; 0 <= start <= stop <= n");
    } else if (start == stop) {
        PyErr_SetString(PyExc_ValueError, "empty range: no largest score");
    } else {
        int32_t best;
        Py_BEGIN_ALLOW_THREADS
        best = scan_split((const int8_t *)rows.buf + start * dim, stop - start, dim,
                          (const int8_t *)query.buf, (int32_t *)out.buf + start, threads);
        Py_END_ALLOW_THREADS
        result = PyLong_FromLong(best);
    }
    PyBuffer_Release(&rows);
    PyBuffer_Release(&query);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(rows, query, out, start, stop, threads=1) -> int: int8 dot products of "
     "rows[start:stop] with query into out[start:stop] (int32) on 1..8 threads; returns the "
     "largest."},
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
