/*
 * The op lines a trace recorder writes, turned into Op objects in C.
 *
 * A trace holds tens of thousands of lines such as
 *
 *     mprotect 0x7f5c2a001000 0x1000 rw-  # t=0.001 tid=42 at=0x401136
 *     touch 0x7f5c2a001000 write  # t=0.002 tid=42 at=0x40114a fault
 *
 * ops_block(text, first_line, op_type, task_size, advice) reads a block of such lines
 * (no '#' line in it: the caller handles those) and returns (ops, notes, slow):
 *
 *   ops    one entry per non-empty line: an instance of op_type with the fields the line
 *          sets as its own attributes (kind, addr, length, prot, write, advice, line), or
 *          None;
 *   notes  the text after "  # " (or ""), or None where ops has None;
 *   slow   (index, line number, line) of every line left to the Python parser.
 *
 * Only the recorder's exact shape is taken here: one space between words, addresses as
 * "0x" and 1-16 lower-case hex digits below task_size, a known protection ("rw-") or
 * advice (a key of the dict `advice`). Everything else, valid or not, is left to
 * vmascope.ops.language, the judge of the language, so an edited trace is checked as
 * any script is and its errors name the same line with the same words.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *k_kind, *k_addr, *k_length, *k_prot, *k_write, *k_advice, *k_line;
static PyObject *s_touch, *s_munmap, *s_mprotect, *s_madvise, *s_mlock, *s_munlock, *s_mseal;

/* "0x" and 1-16 lower-case hex digits, ending at e or a space; the end, or NULL. */
static const char *hex(const char *p, const char *e, uint64_t *out) {
    if (e - p < 3 || p[0] != '0' || p[1] != 'x')
        return NULL;
    p += 2;
    uint64_t v = 0;
    int n = 0;
    for (; p < e && *p != ' '; p++, n++) {
        char c = *p;
        if (c >= '0' && c <= '9')
            v = (v << 4) | (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = (v << 4) | (uint64_t)(c - 'a' + 10);
        else
            return NULL;
    }
    if (n == 0 || n > 16)
        return NULL;
    *out = v;
    return p;
}

/* PROT_READ 1, PROT_WRITE 2, PROT_EXEC 4 from "r-x"; -1 if not a protection. */
static int prot_of(const char *p, const char *e) {
    if (e - p != 3)
        return -1;
    int prot = 0;
    if (p[0] == 'r') prot |= 1; else if (p[0] != '-') return -1;
    if (p[1] == 'w') prot |= 2; else if (p[1] != '-') return -1;
    if (p[2] == 'x') prot |= 4; else if (p[2] != '-') return -1;
    return prot;
}

static int word_is(const char *p, const char *e, const char *w) {
    size_t n = strlen(w);
    return (size_t)(e - p) == n && memcmp(p, w, n) == 0;
}

static int put(PyObject *op, PyObject *k, PyObject *v) {
    if (v == NULL)
        return -1;
    int rc = PyObject_GenericSetAttr(op, k, v);
    Py_DECREF(v);
    return rc;
}

/* The Op of one body (the line before its note), or Py_None (not taken here), or NULL
 * (an error set). */
static PyObject *op_of(const char *b, const char *e, long lineno, PyTypeObject *type,
                       uint64_t task_size, PyObject *advice, PyObject *empty) {
    const char *w = b;
    while (w < e && *w != ' ')
        w++;
    if (w == e)
        Py_RETURN_NONE;
    PyObject *kind = NULL;
    int nargs = 0; /* words after the address and length */
    if (word_is(b, w, "touch")) { kind = s_touch; nargs = -1; }
    else if (word_is(b, w, "mprotect")) { kind = s_mprotect; nargs = 1; }
    else if (word_is(b, w, "madvise")) { kind = s_madvise; nargs = 1; }
    else if (word_is(b, w, "munmap")) kind = s_munmap;
    else if (word_is(b, w, "mlock")) kind = s_mlock;
    else if (word_is(b, w, "munlock")) kind = s_munlock;
    else if (word_is(b, w, "mseal")) kind = s_mseal;
    else
        Py_RETURN_NONE;
    uint64_t addr, length = 0;
    const char *p = hex(w + 1, e, &addr);
    if (p == NULL || addr >= task_size)
        Py_RETURN_NONE;
    int write = 0, prot = 0;
    PyObject *adv = NULL;
    if (nargs == -1) { /* touch ADDR read|write */
        if (p == e || *p != ' ')
            Py_RETURN_NONE;
        if (word_is(p + 1, e, "write")) write = 1;
        else if (!word_is(p + 1, e, "read")) Py_RETURN_NONE;
    } else {
        if (p == e)
            Py_RETURN_NONE;
        p = hex(p + 1, e, &length);
        if (p == NULL)
            Py_RETURN_NONE;
        if (nargs == 0) {
            if (p != e)
                Py_RETURN_NONE;
        } else {
            if (p == e || p + 1 == e)
                Py_RETURN_NONE;
            if (kind == s_mprotect) {
                prot = prot_of(p + 1, e);
                if (prot < 0)
                    Py_RETURN_NONE;
            } else {
                PyObject *word = PyUnicode_DecodeUTF8(p + 1, e - p - 1, "strict");
                if (word == NULL) {
                    PyErr_Clear();
                    Py_RETURN_NONE;
                }
                adv = PyDict_GetItemWithError(advice, word); /* borrowed: the canonical str */
                Py_DECREF(word);
                if (adv == NULL) {
                    if (PyErr_Occurred())
                        return NULL;
                    Py_RETURN_NONE;
                }
            }
        }
    }
    PyObject *op = PyBaseObject_Type.tp_new(type, empty, NULL);
    if (op == NULL)
        return NULL;
    /* object.__setattr__: the instance's own attributes (the dataclass is frozen) */
    if (PyObject_GenericSetAttr(op, k_kind, kind) < 0 ||
        put(op, k_addr, PyLong_FromUnsignedLongLong(addr)) < 0)
        goto fail;
    if (nargs == -1) {
        if (PyObject_GenericSetAttr(op, k_write, write ? Py_True : Py_False) < 0)
            goto fail;
    } else {
        if (put(op, k_length, PyLong_FromUnsignedLongLong(length)) < 0)
            goto fail;
        if (kind == s_mprotect && put(op, k_prot, PyLong_FromLong(prot)) < 0)
            goto fail;
        if (adv != NULL && PyObject_GenericSetAttr(op, k_advice, adv) < 0)
            goto fail;
    }
    if (put(op, k_line, PyLong_FromLong(lineno)) < 0)
        goto fail;
    /* It holds numbers and strings only, and is frozen: it can be in no reference
     * cycle, so the garbage collector need not walk the tens of thousands of them. */
    PyObject_GC_UnTrack(op);
    return op;
fail:
    Py_DECREF(op);
    return NULL;
}

static int append_slow(PyObject *slow, Py_ssize_t idx, long lineno, const char *s,
                       const char *e) {
    PyObject *t = Py_BuildValue("(nls#)", idx, lineno, s, (Py_ssize_t)(e - s));
    if (t == NULL)
        return -1;
    int rc = PyList_Append(slow, t);
    Py_DECREF(t);
    return rc;
}

static PyObject *ops_block(PyObject *Py_UNUSED(mod), PyObject *args) {
    PyObject *text, *type, *advice;
    long first;
    unsigned long long task_size;
    if (!PyArg_ParseTuple(args, "UlO!KO!", &text, &first, &PyType_Type, &type, &task_size,
                          &PyDict_Type, &advice))
        return NULL;
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(text, &len);
    if (s == NULL)
        return NULL;
    const char *end = s + len;
    PyObject *empty = PyTuple_New(0);
    PyObject *ops = PyList_New(0), *notes = PyList_New(0), *slow = PyList_New(0);
    if (empty == NULL || ops == NULL || notes == NULL || slow == NULL)
        goto fail;
    long lineno = first;
    for (const char *ls = s;; lineno++) {
        const char *le = memchr(ls, '\n', (size_t)(end - ls));
        if (le == NULL)
            le = end;
        if (le > ls) {
            /* the body ends at the first "  # "; a line with any other '#' is slow */
            const char *b_end = le, *note = le;
            const char *h = memchr(ls, '#', (size_t)(le - ls));
            int ok = 1;
            if (h != NULL) {
                if (h - ls >= 3 && h[-1] == ' ' && h[-2] == ' ' && h + 1 < le && h[1] == ' ') {
                    b_end = h - 2;
                    note = h + 2;
                } else {
                    ok = 0;
                }
            }
            PyObject *op = Py_None;
            Py_INCREF(op);
            if (ok && memchr(ls, '\r', (size_t)(le - ls)) == NULL) {
                Py_DECREF(op);
                op = op_of(ls, b_end, lineno, (PyTypeObject *)type, task_size, advice, empty);
                if (op == NULL)
                    goto fail;
            }
            PyObject *nt;
            if (op == Py_None) {
                nt = Py_None;
                Py_INCREF(nt);
                if (append_slow(slow, PyList_GET_SIZE(ops), lineno, ls, le) < 0) {
                    Py_DECREF(op);
                    Py_DECREF(nt);
                    goto fail;
                }
            } else {
                nt = PyUnicode_DecodeUTF8(note, le - note, "strict");
                if (nt == NULL) {
                    Py_DECREF(op);
                    goto fail;
                }
            }
            int rc = PyList_Append(ops, op);
            Py_DECREF(op);
            if (rc == 0)
                rc = PyList_Append(notes, nt);
            Py_DECREF(nt);
            if (rc < 0)
                goto fail;
        }
        if (le == end)
            break;
        ls = le + 1;
    }
    Py_DECREF(empty);
    return Py_BuildValue("(NNN)", ops, notes, slow);
fail:
    Py_XDECREF(empty);
    Py_XDECREF(ops);
    Py_XDECREF(notes);
    Py_XDECREF(slow);
    return NULL;
}

static PyMethodDef methods[] = {
    {"ops_block", ops_block, METH_VARARGS,
     "ops_block(text, first_line, op_type, task_size, advice) -> (ops, notes, slow)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_oplines", "Trace op lines parsed in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__oplines(void) {
    struct { PyObject **dst; const char *s; } names[] = {
        {&k_kind, "kind"}, {&k_addr, "addr"}, {&k_length, "length"}, {&k_prot, "prot"},
        {&k_write, "write"}, {&k_advice, "advice"}, {&k_line, "line"},
        {&s_touch, "touch"}, {&s_munmap, "munmap"}, {&s_mprotect, "mprotect"},
        {&s_madvise, "madvise"}, {&s_mlock, "mlock"}, {&s_munlock, "munlock"},
        {&s_mseal, "mseal"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].dst = PyUnicode_InternFromString(names[i].s);
        if (*names[i].dst == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
