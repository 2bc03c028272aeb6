/*
 * vmascope.report._rows: JSON text of many VMAs at once, from a Snapshot's columns.
 *
 * rows(n, segments) -> str
 *
 * Each row is the concatenation, over the segments, of the segment's prefix and its
 * value for that row; rows are joined by ",".  A segment is (prefix, kind, data, table):
 *
 *   HEX    data: 8-byte column          "0x1f000" (quoted, as Python's hex())
 *   UDEC   data: 8-byte column          unsigned decimal
 *   NULLABLE data: 8-byte column        signed decimal, null when negative
 *   TABLE  data: 8-byte column, table   table[value + 1] (value -1 is table[0])
 *   DEV    data: 8-byte column          "MAJ:MIN" as %02x:%02x (major = dev >> 20)
 *   FLAGS  data: 8-byte column, table   ["a","b"]: table[k] for each bit k set
 *   SMAPS  data: tuple of 8-byte columns, table: their '"Key":' prefixes
 *                                       ,"smaps":{...} with the fields >= 0, nothing
 *                                       when none is
 *   TEXT   data: list of str            written as is
 *   END    no data                      the prefix only
 *
 * Tables and texts must be ASCII (JSON from json.dumps with ensure_ascii), so the result
 * is built as bytes and handed over as an ASCII str without decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { HEX, UDEC, NULLABLE, TABLE, DEV, FLAGS, SMAPS, TEXT, END };

typedef struct {
    const char *prefix;
    Py_ssize_t prefix_len;
    int kind;
    Py_buffer col;
    int has_col;
    Py_buffer *cols; /* SMAPS */
    Py_ssize_t ncols;
    PyObject *data;  /* TEXT: the list */
    const char **tab; /* TABLE, FLAGS, SMAPS: ASCII texts */
    Py_ssize_t *tab_len;
    Py_ssize_t ntab;
} Seg;

typedef struct {
    char *buf;
    size_t len, cap;
} Out;

static int grow(Out *o, size_t more) {
    if (o->len + more <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 1 << 16;
    while (cap < o->len + more)
        cap *= 2;
    char *b = PyMem_Realloc(o->buf, cap);
    if (b == NULL)
        return -1;
    o->buf = b;
    o->cap = cap;
    return 0;
}

static inline void put(Out *o, const char *s, size_t n) {
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static inline void put_udec(Out *o, uint64_t v) {
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, tmp + i, (size_t)(24 - i));
}

static inline void put_hex(Out *o, uint64_t v, int width) {
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = digits[v & 15];
        v >>= 4;
    } while (v || 20 - i < width);
    put(o, tmp + i, (size_t)(20 - i));
}

static inline uint64_t at(const Py_buffer *b, Py_ssize_t i) {
    uint64_t v;
    memcpy(&v, (const char *)b->buf + 8 * i, 8);
    return v;
}

static int get_col(PyObject *obj, Py_buffer *view, Py_ssize_t n) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->itemsize != 8 || view->len < 8 * n) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "rows: a column of n 8-byte integers expected");
        return -1;
    }
    return 0;
}

static int get_table(PyObject *obj, Seg *s) {
    if (!PyList_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "rows: a table is a list of str");
        return -1;
    }
    s->ntab = PyList_GET_SIZE(obj);
    s->tab = PyMem_Calloc((size_t)s->ntab + 1, sizeof(char *));
    s->tab_len = PyMem_Calloc((size_t)s->ntab + 1, sizeof(Py_ssize_t));
    if (s->tab == NULL || s->tab_len == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < s->ntab; k++) {
        PyObject *t = PyList_GET_ITEM(obj, k);
        if (!PyUnicode_Check(t) || !PyUnicode_IS_ASCII(t)) {
            PyErr_SetString(PyExc_ValueError, "rows: table texts must be ASCII str");
            return -1;
        }
        s->tab[k] = (const char *)PyUnicode_1BYTE_DATA(t);
        s->tab_len[k] = PyUnicode_GET_LENGTH(t);
    }
    return 0;
}

static void release(Seg *segs, Py_ssize_t nseg) {
    for (Py_ssize_t i = 0; i < nseg; i++) {
        Seg *s = &segs[i];
        if (s->has_col)
            PyBuffer_Release(&s->col);
        for (Py_ssize_t k = 0; k < s->ncols; k++)
            PyBuffer_Release(&s->cols[k]);
        PyMem_Free(s->cols);
        PyMem_Free((void *)s->tab);
        PyMem_Free(s->tab_len);
    }
    PyMem_Free(segs);
}

static int setup(Seg *s, PyObject *spec, Py_ssize_t n) {
    PyObject *prefix, *data, *table;
    if (!PyArg_ParseTuple(spec, "UiOO", &prefix, &s->kind, &data, &table))
        return -1;
    if (!PyUnicode_IS_ASCII(prefix)) {
        PyErr_SetString(PyExc_ValueError, "rows: prefixes must be ASCII");
        return -1;
    }
    s->prefix = (const char *)PyUnicode_1BYTE_DATA(prefix);
    s->prefix_len = PyUnicode_GET_LENGTH(prefix);
    switch (s->kind) {
    case HEX: case UDEC: case NULLABLE: case DEV:
        if (get_col(data, &s->col, n) < 0)
            return -1;
        s->has_col = 1;
        return 0;
    case TABLE: case FLAGS:
        if (get_col(data, &s->col, n) < 0)
            return -1;
        s->has_col = 1;
        return get_table(table, s);
    case SMAPS: {
        if (!PyTuple_Check(data)) {
            PyErr_SetString(PyExc_TypeError, "rows: SMAPS takes a tuple of columns");
            return -1;
        }
        Py_ssize_t nc = PyTuple_GET_SIZE(data);
        s->cols = PyMem_Calloc((size_t)nc + 1, sizeof(Py_buffer));
        if (s->cols == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k < nc; k++) {
            if (get_col(PyTuple_GET_ITEM(data, k), &s->cols[k], n) < 0)
                return -1;
            s->ncols++;
        }
        if (get_table(table, s) < 0)
            return -1;
        if (s->ntab != nc) {
            PyErr_SetString(PyExc_ValueError, "rows: one key per smaps column");
            return -1;
        }
        return 0;
    }
    case TEXT:
        if (!PyList_Check(data) || PyList_GET_SIZE(data) < n) {
            PyErr_SetString(PyExc_TypeError, "rows: TEXT takes a list of n str");
            return -1;
        }
        s->data = data;
        return 0;
    case END:
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "rows: unknown segment kind");
    return -1;
}

/* the longest text one segment can add for row i, so the buffer grows once per row */
static Py_ssize_t bound(const Seg *s, Py_ssize_t i) {
    Py_ssize_t b = s->prefix_len + 48;
    if (s->kind == FLAGS || s->kind == SMAPS) {
        for (Py_ssize_t k = 0; k < s->ntab; k++)
            b += s->tab_len[k] + 24;
    } else if (s->kind == TABLE) {
        int64_t v = (int64_t)at(&s->col, i) + 1;
        if (v >= 0 && v < s->ntab)
            b += s->tab_len[v];
    } else if (s->kind == TEXT) {
        PyObject *t = PyList_GET_ITEM(s->data, i);
        if (PyUnicode_Check(t))
            b += PyUnicode_GET_LENGTH(t);
    }
    return b + 16;
}

static int emit(Out *o, const Seg *s, Py_ssize_t i) {
    put(o, s->prefix, (size_t)s->prefix_len);
    switch (s->kind) {
    case HEX:
        put(o, "\"0x", 3);
        put_hex(o, at(&s->col, i), 1);
        put(o, "\"", 1);
        break;
    case UDEC:
        put_udec(o, at(&s->col, i));
        break;
    case NULLABLE: {
        int64_t v = (int64_t)at(&s->col, i);
        if (v < 0)
            put(o, "null", 4);
        else
            put_udec(o, (uint64_t)v);
        break;
    }
    case TABLE: {
        int64_t v = (int64_t)at(&s->col, i) + 1;
        if (v < 0 || v >= s->ntab) {
            PyErr_Format(PyExc_IndexError, "rows: row %zd: table index %lld out of range",
                         i, (long long)v - 1);
            return -1;
        }
        put(o, s->tab[v], (size_t)s->tab_len[v]);
        break;
    }
    case DEV: {
        uint64_t d = at(&s->col, i);
        put(o, "\"", 1);
        put_hex(o, d >> 20, 2);
        put(o, ":", 1);
        put_hex(o, d & 0xFFFFF, 2);
        put(o, "\"", 1);
        break;
    }
    case FLAGS: {
        uint64_t bits = at(&s->col, i);
        int first = 1;
        put(o, "[", 1);
        for (Py_ssize_t k = 0; k < s->ntab && k < 64; k++) {
            if (bits >> k & 1) {
                if (!first)
                    put(o, ",", 1);
                put(o, s->tab[k], (size_t)s->tab_len[k]);
                first = 0;
            }
        }
        put(o, "]", 1);
        break;
    }
    case SMAPS: {
        int any = 0;
        for (Py_ssize_t k = 0; k < s->ncols; k++) {
            int64_t v = (int64_t)at(&s->cols[k], i);
            if (v < 0)
                continue;
            put(o, any ? "," : ",\"smaps\":{", any ? 1 : 10);
            put(o, s->tab[k], (size_t)s->tab_len[k]);
            put_udec(o, (uint64_t)v);
            any = 1;
        }
        if (any)
            put(o, "}", 1);
        break;
    }
    case TEXT: {
        PyObject *t = PyList_GET_ITEM(s->data, i);
        if (!PyUnicode_Check(t) || !PyUnicode_IS_ASCII(t)) {
            PyErr_Format(PyExc_ValueError, "rows: row %zd: TEXT must be ASCII str", i);
            return -1;
        }
        put(o, (const char *)PyUnicode_1BYTE_DATA(t), (size_t)PyUnicode_GET_LENGTH(t));
        break;
    }
    }
    return 0;
}

static PyObject *rows(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_ssize_t n;
    PyObject *specs;
    if (!PyArg_ParseTuple(args, "nO!", &n, &PyList_Type, &specs))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "rows: n must be >= 0");
        return NULL;
    }
    Py_ssize_t nseg = PyList_GET_SIZE(specs);
    Seg *segs = PyMem_Calloc((size_t)nseg + 1, sizeof(Seg));
    if (segs == NULL)
        return PyErr_NoMemory();
    Out o = {NULL, 0, 0};
    PyObject *result = NULL;
    for (Py_ssize_t k = 0; k < nseg; k++)
        if (setup(&segs[k], PyList_GET_ITEM(specs, k), n) < 0)
            goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t need = 1;
        for (Py_ssize_t k = 0; k < nseg; k++)
            need += bound(&segs[k], i);
        if (grow(&o, (size_t)need) < 0) {
            PyErr_NoMemory();
            goto done;
        }
        if (i)
            put(&o, ",", 1);
        for (Py_ssize_t k = 0; k < nseg; k++)
            if (emit(&o, &segs[k], i) < 0)
                goto done;
    }
    result = PyUnicode_New((Py_ssize_t)o.len, 127);
    if (result != NULL && o.len)
        memcpy(PyUnicode_1BYTE_DATA(result), o.buf, o.len);
done:
    PyMem_Free(o.buf);
    release(segs, nseg);
    return result;
}

static PyMethodDef methods[] = {
    {"rows", rows, METH_VARARGS,
     "rows(n, segments) -> str: n JSON rows built from columns (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "vmascope.report._rows",
    "JSON text of many VMAs at once, from a Snapshot's columns.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rows(void) {
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    const char *names[] = {"HEX", "UDEC", "NULLABLE", "TABLE", "DEV", "FLAGS", "SMAPS",
                           "TEXT", "END"};
    for (int k = 0; k <= END; k++) {
        if (PyModule_AddIntConstant(m, names[k], k) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
