/*
 * Streaming parser for /proc/PID/maps, /proc/PID/smaps (and smaps_rollup) and
 * /proc/PID/numa_maps text.
 *
 * A Parser object is fed chunks of text as they are read (chunks may split lines
 * anywhere) and grows one column per maps field in malloc'd buffers.  finish() hands the
 * buffers over as Column objects (buffer protocol) that numpy.frombuffer wraps without a
 * copy.  The GIL is released while a chunk is parsed.
 *
 * Line formats follow fs/proc/task_mmu.c:
 *   maps:   START-END PERMS OFFSET MAJOR:MINOR INODE [padding NAME]
 *           (hex, hex, [r-][w-][x-][sp], hex, hex:hex, decimal)
 *   smaps:  a maps line, then "Key:   N kB" / "Key:   N" lines and "VmFlags: xx yy "
 *   numa:   START POLICY [key=value ...]
 *
 * Parser(fields=(...)) keeps columns of those smaps fields only (the others are parsed
 * and checked all the same), keep=False no columns at all: only the counts.
 *
 * feed_fd(fd) reads a file to its end and parses it with the GIL released throughout: a
 * second thread read()s into a small ring of reused buffers while the calling thread
 * parses the previous ones, so the kernel's text generation and the parse run on two
 * cores, and nothing in Python runs per chunk. feed_fd(fd, cpus) lets the reading thread
 * run on those CPUs (the caller keeps its other threads off one of them).
 *
 * Errors carry the 1-based line number and what was expected; the Python side turns
 * them into vmascope.errors.ParseError.
 */
#define _GNU_SOURCE /* sched_setaffinity, cpu_set_t */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#define MAX_LINE (1 << 16)
#define MAX_FIELDS 128
#define MAX_KEY 48
#define MAX_FLAGS 64

/* ------------------------------------------------------------------------------------ */
/* Column: a malloc'd block exported through the buffer protocol.                        */

typedef struct {
    PyObject_HEAD
    void *ptr;
    Py_ssize_t nbytes;
} Column;

static int Column_getbuffer(PyObject *obj, Py_buffer *view, int flags) {
    Column *self = (Column *)obj;
    return PyBuffer_FillInfo(view, obj, self->ptr, self->nbytes, 0, flags);
}

static void Column_dealloc(PyObject *obj) {
    Column *self = (Column *)obj;
    free(self->ptr);
    Py_TYPE(obj)->tp_free(obj);
}

static PyBufferProcs Column_as_buffer = {Column_getbuffer, NULL};

static PyTypeObject ColumnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vmascope.procfs._fastparse.Column",
    .tp_basicsize = sizeof(Column),
    .tp_dealloc = Column_dealloc,
    .tp_as_buffer = &Column_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A column of parsed values (use numpy.frombuffer).",
};

/* Takes ownership of ptr (shrunk to nbytes). */
static PyObject *make_column(void *ptr, size_t nbytes) {
    Column *col;
    if (ptr == NULL || nbytes == 0) {
        free(ptr);
        ptr = malloc(8);
        if (ptr == NULL)
            return PyErr_NoMemory();
        nbytes = 0;
    } else {
        void *q = realloc(ptr, nbytes);
        if (q != NULL)
            ptr = q;
    }
    col = PyObject_New(Column, &ColumnType);
    if (col == NULL) {
        free(ptr);
        return NULL;
    }
    col->ptr = ptr;
    col->nbytes = (Py_ssize_t)nbytes;
    return (PyObject *)col;
}

/* ------------------------------------------------------------------------------------ */
/* Parser state.                                                                          */

typedef struct {
    char key[MAX_KEY];
    size_t keylen;
    int64_t *col;
    int drop;         /* not one of the fields asked for: parsed and checked, not kept */
    /* the key and its ':' as two 8-byte words and their masks (keys up to 15 bytes),
       for fast_field */
    uint64_t w[2], m[2];
} Field;

#define MAX_ONLY 16
#define VF_CACHE 96 /* VmFlags texts up to this long are remembered */

typedef struct {
    PyObject_HEAD
    /* The smaps fields to keep as columns (only_set 0: every field); set once, kept
       across resets. */
    char only[MAX_ONLY][MAX_KEY];
    int nonly, only_set;
    int numa;         /* 1: numa_maps lines */
    int keep;         /* 1: keep columns; 0: only count (validation, per-name counts) */
    int busy;

    /* rows */
    size_t n, cap;
    uint64_t *start, *end, *offset, *inode, *vmflags;
    uint8_t *perms;
    uint32_t *dev;
    int32_t *name_id;
    int in_block;     /* a mapping line has been seen (smaps fields may follow) */

    /* smaps fields */
    Field fields[MAX_FIELDS];
    int nfields;
    int nkept;        /* fields with a column */
    int expect;
    int64_t field_lines;
    int64_t skipped_lines;

    /* the last two VmFlags texts and their bits (a fragmented heap repeats one or two) */
    char vf_text[2][VF_CACHE];
    size_t vf_len[2];
    uint64_t vf_bits[2];
    int vf_next;

    /* VmFlags mnemonics */
    char flag_names[MAX_FLAGS][8];
    int nflags;
    uint8_t flag2[65536]; /* two-byte mnemonic -> index + 1 */
    int have_vmflags;

    /* interned names (or policies in numa mode) */
    char **nptr;
    size_t *nlen;
    int64_t *ncount;
    size_t nnames, ncap;
    uint32_t *htab;
    size_t hcap;
    int64_t anon_count;
    uint64_t total_size; /* bytes of every VMA parsed (maps/smaps), kept or not */
    int64_t last_id;

    /* whether a carriage return may be in the lines being parsed (0: the chunk has none,
       so no line needs looking at for one) */
    int maybe_cr;

    /* partial line carried between chunks */
    char *carry;
    size_t carry_len, carry_cap;
    int64_t line;
    uint64_t fed;     /* bytes of text fed so far (bounds the columns' memory) */
    uint64_t max_bytes; /* if not 0: a tighter bound on the columns' memory */

    /* first error */
    int64_t err_line;
    char err_msg[200];
    int oom;
} Parser;

static int set_err(Parser *p, const char *msg) {
    if (p->err_line == 0) {
        p->err_line = p->line;
        snprintf(p->err_msg, sizeof p->err_msg, "%s", msg);
    }
    return -1;
}

static int set_oom(Parser *p) {
    p->oom = 1;
    return -1;
}

static const int8_t HEX[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7,
    ['7'] = 8, ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

/* Hex number of 1..maxd digits; returns the position after it or NULL. */
static const char *hexnum(const char *s, const char *e, uint64_t *out, int maxd) {
    uint64_t v = 0;
    int d = 0;
    while (s < e && HEX[(unsigned char)*s]) {
        if (++d > maxd)
            return NULL;
        v = (v << 4) | (uint64_t)(HEX[(unsigned char)*s] - 1);
        s++;
    }
    if (d == 0)
        return NULL;
    *out = v;
    return s;
}

/* Decimal number fitting in uint64 (and below limit); returns position after or NULL. */
static const char *decnum(const char *s, const char *e, uint64_t *out, uint64_t limit) {
    uint64_t v = 0;
    const char *b = s;
    while (s < e && *s >= '0' && *s <= '9') {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (limit - d) / 10)
            return NULL;
        v = v * 10 + d;
        s++;
    }
    if (s == b)
        return NULL;
    *out = v;
    return s;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static int htab_grow(Parser *p) {
    size_t ncap = p->hcap ? p->hcap * 2 : 256;
    uint32_t *t = calloc(ncap, sizeof(uint32_t));
    if (t == NULL)
        return -1;
    for (size_t i = 0; i < p->nnames; i++) {
        size_t h = (size_t)hash_bytes(p->nptr[i], p->nlen[i]) & (ncap - 1);
        while (t[h])
            h = (h + 1) & (ncap - 1);
        t[h] = (uint32_t)(i + 1);
    }
    free(p->htab);
    p->htab = t;
    p->hcap = ncap;
    return 0;
}

/* Interned id of the name s[0:n]; -1 on out of memory. */
static int64_t intern(Parser *p, const char *s, size_t n) {
    if (p->last_id >= 0 && p->nlen[p->last_id] == n && memcmp(p->nptr[p->last_id], s, n) == 0)
        return p->last_id;
    if ((p->nnames + 1) * 2 > p->hcap && htab_grow(p) < 0)
        return -1;
    size_t h = (size_t)hash_bytes(s, n) & (p->hcap - 1);
    while (p->htab[h]) {
        size_t id = p->htab[h] - 1;
        if (p->nlen[id] == n && memcmp(p->nptr[id], s, n) == 0) {
            p->last_id = (int64_t)id;
            return (int64_t)id;
        }
        h = (h + 1) & (p->hcap - 1);
    }
    if (p->nnames == p->ncap) {
        size_t nc = p->ncap ? p->ncap * 2 : 64;
        char **np = realloc(p->nptr, nc * sizeof(char *));
        if (np == NULL)
            return -1;
        p->nptr = np;
        size_t *nl = realloc(p->nlen, nc * sizeof(size_t));
        if (nl == NULL)
            return -1;
        p->nlen = nl;
        int64_t *cnt = realloc(p->ncount, nc * sizeof(int64_t));
        if (cnt == NULL)
            return -1;
        p->ncount = cnt;
        p->ncap = nc;
    }
    char *copy = malloc(n ? n : 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, n);
    p->nptr[p->nnames] = copy;
    p->nlen[p->nnames] = n;
    p->ncount[p->nnames] = 0;
    p->htab[h] = (uint32_t)(p->nnames + 1);
    p->last_id = (int64_t)p->nnames;
    return (int64_t)p->nnames++;
}

/* Make room for one more row in every kept column. */
/* The columns may hold at most COL_PER_BYTE bytes per byte of text fed, plus
   COL_SLACK: /proc text is far bigger than its columns (a maps line of 50+ bytes is a
   53-byte row; an smaps block of ~1 KB is a ~300-byte row), but bare mapping lines
   after an smaps block with many fields would each cost a row of every field. */
#define COL_PER_BYTE 16
#define COL_SLACK ((size_t)16 << 20)

static size_t row_bytes(const Parser *p) {
    if (p->numa)
        return sizeof(uint64_t) + sizeof(int32_t);
    return 4 * sizeof(uint64_t) + sizeof(uint8_t) + sizeof(uint32_t) + sizeof(int32_t) +
           (p->have_vmflags ? sizeof(uint64_t) : 0) + (size_t)p->nkept * sizeof(int64_t);
}

static size_t col_budget(const Parser *p) {
    size_t budget = (size_t)p->fed * COL_PER_BYTE + COL_SLACK;
    if (p->max_bytes && p->max_bytes < budget)
        budget = (size_t)p->max_bytes;
    return budget;
}

static int over_budget(Parser *p, size_t rows) {
    return rows > col_budget(p) / row_bytes(p);
}

static int reserve_row(Parser *p) {
    if (!p->keep || p->n < p->cap)
        return 0;
    size_t nc = p->cap ? p->cap * 2 : 1024;
    if (over_budget(p, nc)) {
        nc = col_budget(p) / row_bytes(p);
        if (nc <= p->n)
            return set_err(p, "expected smaps text in which mappings have their fields "
                              "(too many bare mapping lines after smaps fields to hold in "
                              "bounded memory)");
    }
#define GROW(ptr)                                                   \
    do {                                                            \
        void *q = realloc((ptr), nc * sizeof(*(ptr)));              \
        if (q == NULL)                                              \
            return -1;                                              \
        (ptr) = q;                                                  \
    } while (0)
    GROW(p->start);
    GROW(p->name_id);
    if (!p->numa) {
        GROW(p->end);
        GROW(p->offset);
        GROW(p->inode);
        GROW(p->perms);
        GROW(p->dev);
        if (p->have_vmflags)
            GROW(p->vmflags);
        for (int i = 0; i < p->nfields; i++)
            if (!p->fields[i].drop)
                GROW(p->fields[i].col);
    }
#undef GROW
    p->cap = nc;
    return 0;
}

static int add_name(Parser *p, const char *s, size_t n, int32_t *out) {
    int64_t id = intern(p, s, n);
    if (id < 0)
        return set_oom(p);
    p->ncount[id]++;
    *out = (int32_t)id;
    return 0;
}

static int parse_numa_line(Parser *p, const char *s, const char *e) {
    uint64_t addr;
    const char *q = hexnum(s, e, &addr, 16);
    if (q == NULL || q == e || *q != ' ')
        return set_err(p, "expected a numa_maps line 'START POLICY [key=value ...]'");
    q++;
    const char *b = q;
    while (q < e && *q != ' ')
        q++;
    /* Two policy names contain a space (mm/mempolicy.c policy_modes[]). */
    if ((q - b == 8 && memcmp(b, "weighted", 8) == 0 && e - q >= 11 &&
         memcmp(q, " interleave", 11) == 0) ||
        (q - b >= 6 && memcmp(b, "prefer", 6) == 0 && e - q >= 7 &&
         memcmp(q, " (many)", 7) == 0)) {
        q++;
        while (q < e && *q != ' ')
            q++;
    }
    if (q == b)
        return set_err(p, "expected a memory policy after the address");
    int32_t pid;
    if (add_name(p, b, (size_t)(q - b), &pid) < 0)
        return -1;
    if (reserve_row(p) < 0)
        return p->err_line ? -1 : set_oom(p);
    if (p->keep) {
        p->start[p->n] = addr;
        p->name_id[p->n] = pid;
    }
    p->n++;
    return 0;
}

/* One mapping line's row (name NULL: anonymous), once every field is checked. */
static int add_row(Parser *p, uint64_t start, uint64_t end, uint8_t perms, uint64_t off,
                   uint32_t dev, uint64_t ino, const char *name, size_t name_len) {
    int32_t nid = -1;
    if (name != NULL) {
        if (add_name(p, name, name_len, &nid) < 0)
            return -1;
    } else {
        p->anon_count++;
    }
    if (p->keep && p->n == p->cap && reserve_row(p) < 0)
        return p->err_line ? -1 : set_oom(p);
    p->total_size += end - start;
    if (p->keep) {
        size_t i = p->n;
        p->start[i] = start;
        p->end[i] = end;
        p->perms[i] = perms;
        p->offset[i] = off;
        p->dev[i] = dev;
        p->inode[i] = ino;
        p->name_id[i] = nid;
        if (p->have_vmflags)
            p->vmflags[i] = 0;
        for (int f = 0; f < p->nfields; f++)
            if (!p->fields[f].drop)
                p->fields[f].col[i] = -1;
    }
    p->n++;
    p->in_block = 1;
    p->expect = 0;
    return 0;
}

static int parse_header(Parser *p, const char *s, const char *e) {
    uint64_t start, end, off, major, minor, ino;
    const char *q = hexnum(s, e, &start, 16);
    if (q == NULL || q == e || *q != '-')
        return set_err(p, "expected START-END with hexadecimal addresses");
    q = hexnum(q + 1, e, &end, 16);
    if (q == NULL || q == e || *q != ' ')
        return set_err(p, "expected START-END with hexadecimal addresses");
    if (end <= start)
        return set_err(p, "expected END greater than START");
    q++;
    if (e - q < 5 || q[4] != ' ')
        return set_err(p, "expected permissions like 'rw-p' after the addresses");
    uint8_t perms = 0;
    if (q[0] == 'r') perms |= 1; else if (q[0] != '-') goto badperms;
    if (q[1] == 'w') perms |= 2; else if (q[1] != '-') goto badperms;
    if (q[2] == 'x') perms |= 4; else if (q[2] != '-') goto badperms;
    if (q[3] == 's') perms |= 8; else if (q[3] != 'p') goto badperms;
    q += 5;
    q = hexnum(q, e, &off, 16);
    if (q == NULL || q == e || *q != ' ')
        return set_err(p, "expected a hexadecimal file offset after the permissions");
    q = hexnum(q + 1, e, &major, 3);
    if (q == NULL || q == e || *q != ':')
        return set_err(p, "expected a device MAJOR:MINOR in hexadecimal after the offset");
    q = hexnum(q + 1, e, &minor, 5);
    if (q == NULL || (q < e && *q != ' '))
        return set_err(p, "expected a device MAJOR:MINOR in hexadecimal after the offset");
    q = (q < e) ? q + 1 : q;
    q = decnum(q, e, &ino, UINT64_MAX);
    if (q == NULL || (q < e && *q != ' '))
        return set_err(p, "expected a decimal inode number after the device");
    const char *name = NULL;
    while (q < e && *q == ' ')
        q++;
    if (q < e)
        name = q;
    return add_row(p, start, end, perms, off, (uint32_t)((major << 20) | minor), ino, name,
                   (size_t)(e - q));
badperms:
    return set_err(p, "expected permissions like 'rw-p' after the addresses");
}

static int flag_index(Parser *p, const char *s, size_t n) {
    if (n == 2) {
        unsigned k = (unsigned char)s[0] | ((unsigned)(unsigned char)s[1] << 8);
        if (p->flag2[k])
            return p->flag2[k] - 1;
    } else {
        for (int i = 0; i < p->nflags; i++)
            if (strlen(p->flag_names[i]) == n && memcmp(p->flag_names[i], s, n) == 0)
                return i;
    }
    if (p->nflags >= MAX_FLAGS)
        return set_err(p, "expected at most 64 distinct VmFlags mnemonics");
    memcpy(p->flag_names[p->nflags], s, n);
    p->flag_names[p->nflags][n] = 0;
    if (n == 2)
        p->flag2[(unsigned char)s[0] | ((unsigned)(unsigned char)s[1] << 8)] =
            (uint8_t)(p->nflags + 1);
    return p->nflags++;
}

static int parse_vmflags(Parser *p, const char *q, const char *e) {
    uint64_t bits = 0;
    size_t len = (size_t)(e - q);
    int fill = -1; /* the slot to remember this text in, once it has been checked */
    if (len && len <= VF_CACHE) {
        for (int i = 0; i < 2; i++)
            if (p->vf_len[i] == len && memcmp(p->vf_text[i], q, len) == 0) {
                bits = p->vf_bits[i]; /* as a VMA before: the same (checked) mnemonics */
                q = e;
                break;
            }
        if (q < e) {
            fill = p->vf_next;
            p->vf_next ^= 1;
            p->vf_len[fill] = 0;
        }
    }
    const char *text = q;
    while (q < e) {
        while (q < e && *q == ' ')
            q++;
        const char *b = q;
        while (q < e && *q != ' ')
            q++;
        if (q == b)
            break;
        if (q - b > 7)
            return set_err(p, "expected VmFlags mnemonics of at most 7 characters");
        /* The kernel prints two lowercase letters or digits per flag; anything that is
           not printable ASCII (a NUL, a byte that is not UTF-8) is not VmFlags. */
        for (const char *c = b; c < q; c++)
            if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e)
                return set_err(p, "expected VmFlags mnemonics of printable ASCII "
                                  "characters (like 'rd wr mr')");
        int idx = flag_index(p, b, (size_t)(q - b));
        if (idx < 0)
            return -1;
        bits |= (uint64_t)1 << idx;
    }
    if (fill >= 0) {
        memcpy(p->vf_text[fill], text, len);
        p->vf_len[fill] = len;
        p->vf_bits[fill] = bits;
    }
    if (p->keep) {
        if (!p->have_vmflags) {
            uint64_t *col = calloc(p->cap ? p->cap : 1, sizeof(uint64_t));
            if (col == NULL)
                return set_oom(p);
            p->vmflags = col;
            p->have_vmflags = 1;
        }
        p->vmflags[p->n - 1] = bits;
    } else {
        p->have_vmflags = 1;
    }
    return 0;
}

static int field_slot(Parser *p, const char *k, size_t kl) {
    if (p->expect < p->nfields) {
        Field *f = &p->fields[p->expect];
        if (f->keylen == kl && memcmp(f->key, k, kl) == 0)
            return p->expect++;
    }
    for (int i = 0; i < p->nfields; i++) {
        Field *f = &p->fields[i];
        if (f->keylen == kl && memcmp(f->key, k, kl) == 0) {
            p->expect = i + 1;
            return i;
        }
    }
    if (p->nfields >= MAX_FIELDS)
        return set_err(p, "expected at most 128 distinct smaps fields");
    int drop = p->only_set;
    for (int i = 0; drop && i < p->nonly; i++)
        if (strlen(p->only[i]) == kl && memcmp(p->only[i], k, kl) == 0)
            drop = 0;
    if (p->keep && !drop) {
        p->nkept++; /* the row with this field */
        int over = over_budget(p, p->cap);
        p->nkept--;
        if (over)
            return set_err(p, "expected smaps text in which mappings have their fields "
                              "(a new field after too many bare mapping lines to hold in "
                              "bounded memory)");
    }
    Field *f = &p->fields[p->nfields];
    memcpy(f->key, k, kl);
    f->key[kl] = 0;
    f->keylen = kl;
    memset(f->w, 0, sizeof f->w);
    memset(f->m, 0, sizeof f->m);
    if (kl < 16) {
        char word[16] = {0}, mask[16] = {0};
        memcpy(word, k, kl);
        word[kl] = ':';
        memset(mask, 0xff, kl + 1);
        memcpy(f->w, word, 16);
        memcpy(f->m, mask, 16);
    }
    f->col = NULL;
    f->drop = drop;
    if (p->keep && !drop) {
        f->col = malloc((p->cap ? p->cap : 1) * sizeof(int64_t));
        if (f->col == NULL)
            return set_oom(p);
        for (size_t i = 0; i < p->n; i++)
            f->col[i] = -1;
    }
    if (!drop)
        p->nkept++;
    p->expect = p->nfields + 1;
    return p->nfields++;
}

static int is_key_start(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_key_char(char c) {
    return is_key_start(c) || (c >= '0' && c <= '9');
}

/* A "Key: value" line; kl is the key's length and slot its field (or -1) when the
   caller already knows them. */
static int parse_field(Parser *p, const char *s, const char *e, size_t kl, int slot) {
    const char *q = s + kl;
    if (kl == 0) {
        while (q < e && is_key_char(*q))
            q++;
        kl = (size_t)(q - s);
    }
    if (!p->in_block)
        return set_err(p, "expected a mapping line 'START-END PERMS OFFSET DEV INODE [NAME]' "
                          "before smaps fields");
    if (kl >= MAX_KEY)
        return set_err(p, "expected an smaps field name shorter than 48 characters");
    q++; /* the ':' */
    p->field_lines++;
    if (kl == 7 && memcmp(s, "VmFlags", 7) == 0)
        return parse_vmflags(p, q, e);
    while (q + 8 <= e && memcmp(q, "        ", 8) == 0)
        q += 8;
    while (q < e && (*q == ' ' || *q == '\t'))
        q++;
    uint64_t v;
    const char *r = decnum(q, e, &v, (uint64_t)INT64_MAX);
    if (r == NULL || q == e) {
        if (r == NULL && q < e && *q >= '0' && *q <= '9')
            return set_err(p, "expected a value that fits in 63 bits");
        p->skipped_lines++; /* a textual field of some other kernel: not a column */
        return 0;
    }
    while (r < e && *r == ' ')
        r++;
    if (r == e) {
        /* plain number (THPeligible, ProtectionKey, ...) */
    } else if (e - r == 2 && r[0] == 'k' && r[1] == 'B') {
        if (v > (uint64_t)INT64_MAX / 1024)
            return set_err(p, "expected a kB value that fits in 63 bits as bytes");
        v *= 1024;
    } else {
        p->skipped_lines++;
        return 0;
    }
    if (slot >= 0)
        p->expect = slot + 1;
    else if ((slot = field_slot(p, s, kl)) < 0)
        return -1;
    if (p->keep && !p->fields[slot].drop)
        p->fields[slot].col[p->n - 1] = (int64_t)v;
    return 0;
}

/* A carriage return inside a line that is followed by what starts a maps line
   (HEX-), a numa_maps line (HEX ) or an smaps field (Key:): text with CR-only line endings.  A lone CR in a
   file name (the kernel does not escape it) is left alone. */
static int cr_inside(const char *s, const char *e, int numa) {
    const char *c = s;
    while ((c = memchr(c, '\r', (size_t)(e - c))) != NULL) {
        const char *q = ++c;
        while (q < e && HEX[(unsigned char)*q])
            q++;
        if (q > c && q < e && (*q == '-' || (numa && *q == ' ')))
            return 1;
        q = c;
        if (q < e && is_key_start(*q)) {
            while (q < e && is_key_char(*q))
                q++;
            if (q < e && *q == ':')
                return 1;
        }
    }
    return 0;
}

/* One line without its '\n'. */
static int parse_line(Parser *p, const char *s, const char *e) {
    p->line++;
    if (e - s > MAX_LINE)
        return set_err(p, "expected lines shorter than 65536 bytes");
    if (p->maybe_cr && e > s && e[-1] == '\r')
        e--;
    if (p->maybe_cr && cr_inside(s, e, p->numa))
        return set_err(p, "expected lines ending in a newline, found a carriage return "
                          "followed by another line (CR-only line endings?)");
    /* Fast path: smaps prints its fields in the same order in every block. */
    if (p->in_block && p->expect < p->nfields) {
        const Field *f = &p->fields[p->expect];
        if ((size_t)(e - s) > f->keylen && s[f->keylen] == ':' &&
            memcmp(s, f->key, f->keylen) == 0)
            return parse_field(p, s, e, f->keylen, p->expect);
    }
    const char *q = s;
    while (q < e && (*q == ' ' || *q == '\t'))
        q++;
    if (q == e)
        return 0; /* blank line */
    if (p->numa)
        return parse_numa_line(p, s, e);
    /* A mapping line starts with hex digits and '-'; a field with "Key:". */
    const char *h = s;
    while (h < e && HEX[(unsigned char)*h])
        h++;
    if (h > s && h < e && *h == '-')
        return parse_header(p, s, e);
    if (is_key_start(*s)) {
        q = s;
        while (q < e && is_key_char(*q))
            q++;
        if (q < e && *q == ':')
            return parse_field(p, s, e, 0, -1);
    }
    if (h > s && (h == e || *h == ' '))
        return set_err(p, "expected START-END with hexadecimal addresses");
    return set_err(p, "expected a mapping line 'START-END PERMS OFFSET DEV INODE [NAME]' or "
                      "an smaps field 'Name: value'");
}

/* The smaps field the parser expects next, in the kernel's own shape ("Rss:", spaces, a
   decimal number, " kB" or nothing, '\n'), parsed where it starts at s without looking
   for the line's end first: the position after its '\n', or NULL when the line is
   anything else (parse_line then takes it, and says what is wrong with it). */
static const char *fast_field(Parser *p, const char *s, const char *e) {
    const Field *f = &p->fields[p->expect];
    size_t kl = f->keylen;
    if (kl >= 16 || e - s < 24)
        return NULL;
    uint64_t a, b2;
    memcpy(&a, s, 8);
    memcpy(&b2, s + 8, 8);
    if (((a & f->m[0]) ^ f->w[0]) | ((b2 & f->m[1]) ^ f->w[1]))
        return NULL;
    const char *q = s + kl + 1;
    /* the spaces before the value, eight at a time */
    const uint64_t spaces = 0x2020202020202020ULL;
    while (e - q >= 8) {
        uint64_t w;
        memcpy(&w, q, 8);
        if (w != spaces) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            q += __builtin_clzll(w ^ spaces) / 8; /* the first non-space byte */
#else
            q += __builtin_ctzll(w ^ spaces) / 8;
#endif
            break;
        }
        q += 8;
    }
    while (q < e && *q == ' ')
        q++;
    uint64_t v = 0;
    const char *b = q;
    while (q < e && *q >= '0' && *q <= '9' && q - b < 18) /* 18 digits: no overflow */
        v = v * 10 + (uint64_t)(*q++ - '0');
    if (q == b || q == e || (*q >= '0' && *q <= '9'))
        return NULL;
    if (*q == ' ') {
        if (e - q < 4 || q[1] != 'k' || q[2] != 'B' || q[3] != '\n' ||
            v > (uint64_t)INT64_MAX / 1024)
            return NULL;
        v *= 1024;
        q += 3;
    }
    if (*q != '\n' || q - s > MAX_LINE)
        return NULL;
    p->line++;
    p->field_lines++;
    if (p->keep && !f->drop)
        f->col[p->n - 1] = (int64_t)v;
    p->expect++;
    return q + 1;
}

/* Mapping lines in the kernel's own shape, eight characters at a time. A word holds
   eight characters, the first in its lowest byte; a byte's high bit in a mask stands for
   that character. */
#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

static inline uint64_t load8(const char *s) {
    uint64_t w;
    memcpy(&w, s, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/* The characters of w that are lowercase hexadecimal digits. Every byte is taken below
   0x80 first, so adding up to 0x7f to it cannot carry into the next. */
static inline uint64_t hex_mask(uint64_t w) {
    uint64_t x = w & ~HIGH;
    uint64_t digit = (x + (0x80 - 0x30) * ONES) & ~(x + (0x80 - 0x3a) * ONES);
    uint64_t lower = (x + (0x80 - 0x61) * ONES) & ~(x + (0x80 - 0x67) * ONES);
    return (digit | lower) & ~w & HIGH;
}

/* The number eight hexadecimal digits make (characters that are not digits must be
   '\0'); the first character is the most significant digit. */
static inline uint64_t hex_value8(uint64_t w) {
    uint64_t nib = (w & 0x0F0F0F0F0F0F0F0FULL) + ((w >> 6) & ONES) * 9; /* 'a'-'f': +9 */
    uint64_t v = ((nib & 0x00FF00FF00FF00FFULL) << 4) | ((nib >> 8) & 0x00FF00FF00FF00FFULL);
    v = ((v & 0x0000FFFF0000FFFFULL) << 8) | ((v >> 16) & 0x0000FFFF0000FFFFULL);
    return ((v & 0xFFFFFFFFULL) << 16) | (v >> 32);
}

/* The permissions at q ("rwxp", each letter or '-'; the last 's' or 'p') as bits, or
   -1. */
static inline int perm_bits(const char *q) {
    if ((q[0] != 'r' && q[0] != '-') || (q[1] != 'w' && q[1] != '-') ||
        (q[2] != 'x' && q[2] != '-') || (q[3] != 's' && q[3] != 'p'))
        return -1;
    return (q[0] == 'r') | (q[1] == 'w') << 1 | (q[2] == 'x') << 2 | (q[3] == 's') << 3;
}

/* The commonest line of a 64-bit process, at fixed places: twelve-digit addresses, an
   eight-digit offset, a two-by-two-digit device ("7f1c2a400000-7f1c2a600000 rw-p 00000000
   00:00 "). Every place is read at once, so no field waits for the one before it. The
   position of the inode, or NULL. */
static inline const char *common_shape(const char *s, uint64_t *start, uint64_t *end,
                                       int *perms, uint64_t *off, uint64_t *dev) {
    /* the first eight digits of each address, then the last four of both in one word */
    uint64_t a = load8(s), b = load8(s + 13);
    uint64_t c = (load8(s + 8) & 0xFFFFFFFFULL) | (load8(s + 21) << 32);
    if ((hex_mask(a) & hex_mask(b) & hex_mask(c)) != HIGH || s[12] != '-' || s[25] != ' ' ||
        s[30] != ' ' || (*perms = perm_bits(s + 26)) < 0)
        return NULL;
    uint64_t tails = hex_value8(c);
    *start = (hex_value8(a) << 16) | (tails >> 16);
    *end = (hex_value8(b) << 16) | (tails & 0xFFFF);
    /* Anonymous memory has offset 0, device 00:00 and inode 0: two words to compare */
    uint64_t o, d, zeros, anon_dev; /* the texts as words, in memory order */
    memcpy(&o, s + 31, 8);
    memcpy(&d, s + 40, 8);
    memcpy(&zeros, "00000000", 8);
    memcpy(&anon_dev, "00:00 0 ", 8);
    if (o == zeros && d == anon_dev && s[39] == ' ') {
        *off = *dev = 0;
        return s + 46;
    }
    o = load8(s + 31);
    d = load8(s + 40);
    /* d: two digits of the major, ':', two of the minor, ' ', two inode characters */
    const uint64_t dev_digits = 0x0000008080008080ULL;
    if (hex_mask(o) != HIGH || (hex_mask(d) & dev_digits) != dev_digits || s[39] != ' ' ||
        s[42] != ':' || s[45] != ' ')
        return NULL;
    *off = hex_value8(o);
    /* the major's digits to the third and fourth places, the minor's to the last two */
    uint64_t v = hex_value8(((d & 0xFFFF) << 16) | ((d & 0x000000FFFF000000ULL) << 24));
    *dev = ((v >> 16) << 20) | (v & 0xFFFF);
    return s + 46;
}

#define HEADER_SPAN 96 /* fast_header reads at most the first 68 bytes of a line */

/* A mapping line in the commonest shape the kernel prints (show_map_vma; see
   common_shape), a decimal inode of at most 19 digits, then '\n', or spaces and a name,
   at s with at least HEADER_SPAN bytes after it, in a chunk with no '\r': 1 with *next after its '\n', 0 when the line
   is anything else (parse_line takes it, and says what is wrong with it), -1 on an
   error adding its row. The rows are the ones parse_header makes. */
static int fast_header(Parser *p, const char *s, const char *e, const char **next) {
    uint64_t start, end, off, dev, ino = 0;
    int perms;
    const char *q = common_shape(s, &start, &end, &perms, &off, &dev);
    if (q == NULL || end <= start)
        return 0;
    const char *b = q;
    while (*q >= '0' && *q <= '9' && q - b < 20)
        ino = ino * 10 + (uint64_t)(*q++ - '0');
    if (q == b || q - b > 19 || *q != ' ')
        return 0;
    q++;
    const char *name = NULL, *nl = q;
    if (*q != '\n') {
        const uint64_t spaces = 0x2020202020202020ULL;
        while (e - q >= 8) {
            uint64_t w;
            memcpy(&w, q, 8);
            if (w != spaces)
                break;
            q += 8;
        }
        while (q < e && *q == ' ')
            q++;
        nl = memchr(q, '\n', (size_t)(e - q));
        if (nl == NULL || nl - s > MAX_LINE)
            return 0;
        if (nl > q)
            name = q;
    }
    p->line++;
    if (add_row(p, start, end, (uint8_t)perms, off, (uint32_t)dev, ino, name,
                (size_t)(nl - q)) < 0)
        return -1;
    *next = nl + 1;
    return 1;
}

/* Parse whole lines of buf[0:n]; a trailing partial line is kept in carry. */
static int parse_chunk(Parser *p, const char *buf, size_t n) {
    const char *s = buf, *e = buf + n;
    p->fed += n;
    if (p->carry_len) {
        const char *nl = memchr(s, '\n', n);
        size_t take = nl ? (size_t)(nl - s) : n;
        if (p->carry_len + take > MAX_LINE) {
            p->line++;
            return set_err(p, "expected lines shorter than 65536 bytes");
        }
        if (p->carry_len + take > p->carry_cap) {
            size_t nc = p->carry_len + take + 256;
            char *c = realloc(p->carry, nc);
            if (c == NULL)
                return set_oom(p);
            p->carry = c;
            p->carry_cap = nc;
        }
        memcpy(p->carry + p->carry_len, s, take);
        p->carry_len += take;
        if (nl == NULL)
            return 0;
        p->maybe_cr = 1;
        if (parse_line(p, p->carry, p->carry + p->carry_len) < 0)
            return -1;
        p->carry_len = 0;
        s = nl + 1;
    }
    p->maybe_cr = memchr(s, '\r', (size_t)(e - s)) != NULL;
    int fast = !p->numa && !p->maybe_cr;
    while (s < e) {
        if (fast && p->in_block && p->expect < p->nfields) {
            const char *next = fast_field(p, s, e);
            if (next != NULL) {
                s = next;
                continue;
            }
        }
        if (fast && e - s >= HEADER_SPAN && HEX[(unsigned char)*s]) {
            const char *next;
            int r = fast_header(p, s, e, &next);
            if (r < 0)
                return -1;
            if (r > 0) {
                s = next;
                continue;
            }
        }
        const char *nl = memchr(s, '\n', (size_t)(e - s));
        if (nl == NULL)
            break;
        if (parse_line(p, s, nl) < 0)
            return -1;
        s = nl + 1;
    }
    if (s < e) {
        size_t rest = (size_t)(e - s);
        if (rest > MAX_LINE) {
            p->line++;
            return set_err(p, "expected lines shorter than 65536 bytes");
        }
        if (rest > p->carry_cap) {
            char *c = realloc(p->carry, rest + 256);
            if (c == NULL)
                return set_oom(p);
            p->carry = c;
            p->carry_cap = rest + 256;
        }
        memcpy(p->carry, s, rest);
        p->carry_len = rest;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Python interface.                                                                      */

static PyObject *ParseFailure; /* args: (line, expected) */

static void free_state(Parser *p) {
    free(p->start); free(p->end); free(p->offset); free(p->inode); free(p->vmflags);
    free(p->perms); free(p->dev); free(p->name_id);
    p->start = p->end = p->offset = p->inode = p->vmflags = NULL;
    p->perms = NULL; p->dev = NULL; p->name_id = NULL;
    for (int i = 0; i < p->nfields; i++) {
        free(p->fields[i].col);
        p->fields[i].col = NULL;
    }
    for (size_t i = 0; i < p->nnames; i++)
        free(p->nptr[i]);
    free(p->nptr); free(p->nlen); free(p->ncount); free(p->htab); free(p->carry);
    p->nptr = NULL; p->nlen = NULL; p->ncount = NULL; p->htab = NULL; p->carry = NULL;
    p->nnames = p->ncap = p->hcap = 0;
    p->carry_len = p->carry_cap = 0;
}

/* Back to an empty parser; keeps numa/keep and the VmFlags table. */
static void reset(Parser *p) {
    int numa = p->numa, keep = p->keep, nflags = p->nflags;
    uint64_t max_bytes = p->max_bytes;
    char saved[MAX_FLAGS][8];
    memcpy(saved, p->flag_names, sizeof saved);
    free_state(p);
    size_t off = offsetof(Parser, numa);
    memset((char *)p + off, 0, sizeof(Parser) - off);
    p->numa = numa;
    p->keep = keep;
    p->max_bytes = max_bytes;
    p->last_id = -1;
    for (int i = 0; i < nflags; i++)
        flag_index(p, saved[i], strlen(saved[i]));
}

static void Parser_dealloc(PyObject *obj) {
    free_state((Parser *)obj);
    Py_TYPE(obj)->tp_free(obj);
}

/* Each str of the sequence obj (NULL or None: none) handed to add, which refuses it
   with a negative return: ValueError "bad WHAT" for a refused, empty or too long one. */
static int each_str(Parser *p, PyObject *obj, const char *what, size_t maxlen,
                    int (*add)(Parser *, const char *, size_t)) {
    if (obj == NULL || obj == Py_None)
        return 0;
    PyObject *seq = PySequence_Fast(obj, "expected a sequence of str");
    if (seq == NULL)
        return -1;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (s == NULL || len < 1 || (size_t)len > maxlen || add(p, s, (size_t)len) < 0) {
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "bad %s", what);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int add_only(Parser *p, const char *s, size_t len) {
    if (p->nonly >= MAX_ONLY)
        return -1;
    memcpy(p->only[p->nonly], s, len);
    p->only[p->nonly++][len] = 0;
    return 0;
}

static int add_flag(Parser *p, const char *s, size_t len) {
    return p->nflags >= MAX_FLAGS || flag_index(p, s, len) < 0 ? -1 : 0;
}

static int Parser_init(PyObject *obj, PyObject *args, PyObject *kw) {
    Parser *p = (Parser *)obj;
    static char *kwlist[] = {"flag_names", "numa", "keep", "fields", NULL};
    PyObject *flags = NULL, *only = NULL;
    int numa = 0, keep = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OppO", kwlist, &flags, &numa, &keep, &only))
        return -1;
    free_state(p);
    Py_ssize_t off = offsetof(Parser, numa);
    memset((char *)p + off, 0, sizeof(Parser) - (size_t)off);
    p->numa = numa;
    p->keep = keep;
    p->last_id = -1;
    p->nonly = 0;
    p->only_set = only != NULL && only != Py_None;
    if (each_str(p, only, "fields", MAX_KEY - 1, add_only) < 0 ||
        each_str(p, flags, "flag_names", 7, add_flag) < 0)
        return -1;
    return 0;
}

static PyObject *raise_failure(Parser *p) {
    if (p->oom)
        return PyErr_NoMemory();
    PyObject *args = Py_BuildValue("(Ls)", (long long)p->err_line, p->err_msg);
    if (args != NULL) {
        PyErr_SetObject(ParseFailure, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* -1 with an exception if the parser is in use by another thread or has failed. */
static int check_usable(Parser *p) {
    if (p->busy) {
        PyErr_SetString(PyExc_RuntimeError, "parser used by two threads at once");
        return -1;
    }
    if (p->err_line || p->oom) {
        raise_failure(p);
        return -1;
    }
    return 0;
}

static PyObject *Parser_feed(PyObject *obj, PyObject *arg) {
    Parser *p = (Parser *)obj;
    Py_buffer view;
    if (check_usable(p) < 0)
        return NULL;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc;
    p->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = parse_chunk(p, view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    p->busy = 0;
    PyBuffer_Release(&view);
    if (rc < 0)
        return raise_failure(p);
    Py_RETURN_NONE;
}

/* read() into buf until at least `want` bytes are in it (or one read when want is 0) or
 * the file ends; *eof set at the end, *err the errno of a failed read. Returns bytes. */
static size_t fill_buf(int fd, char *buf, size_t cap, size_t want, int *eof, int *err) {
    size_t filled = 0;
    *eof = *err = 0;
    while (filled < want || (filled == 0 && cap > 0)) {
        ssize_t n = read(fd, buf + filled, cap - filled);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            break;
        }
        if (n == 0) {
            *eof = 1;
            break;
        }
        filled += (size_t)n;
    }
    return filled;
}

/* feed_fd: one thread reads the file. It parses maps and numa_maps text itself, each
 * read's page or so while still in its cache: at 2M VMAs maps took 0.31 s so, and
 * 0.335 s parsed on another core (cat: 0.29 s). An smaps mapping's twenty lines cost
 * more to parse than to hand over (2.17 s against 1.83 s; cat: 1.71 s): once fields
 * show, the thread fills RING buffers of RING_CHUNK bytes in turn (each at least
 * RING_LOW full unless the file ends) for the calling thread to parse. */
#define RING 4
#define RING_CHUNK (1 << 20)
#define RING_LOW (RING_CHUNK - (1 << 16))

typedef struct {
    int fd;
    char *buf[RING];
    size_t len[RING];
    unsigned long long filled, parsed; /* buffers handed over, buffers given back */
    int eof, err, stop;
    const cpu_set_t *cpus; /* where the reading thread runs (NULL: where it was started) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} Ring;

/* The reading thread moves to the highest of cpus, the one the command's other threads
   keep off (early.keep_off_one_cpu), at once: left to the scheduler, it stays on the
   core of the thread that started it for tens of milliseconds, sharing it with the
   imports. Then it may run on all of cpus, so on a busy host it goes where there is
   room. A hint: failure is fine. */
static void move_to_free_cpu(const cpu_set_t *cpus) {
    if (cpus == NULL)
        return;
    for (int c = CPU_SETSIZE - 1; c >= 0; c--) {
        if (CPU_ISSET(c, cpus)) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            (void)sched_setaffinity(0, sizeof one, &one);
            break;
        }
    }
    (void)sched_setaffinity(0, sizeof *cpus, cpus);
}

static void *ring_reader(void *arg) {
    Ring *r = arg;
    move_to_free_cpu(r->cpus);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->filled - r->parsed == RING && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        int stop = r->stop;
        unsigned long long slot = r->filled % RING;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            return NULL;
        int eof, err;
        size_t got = fill_buf(r->fd, r->buf[slot], RING_CHUNK, RING_LOW, &eof, &err);
        pthread_mutex_lock(&r->mu);
        r->len[slot] = got;
        if (got)
            r->filled++;
        r->eof = eof;
        r->err = err;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (eof || err)
            return NULL;
    }
}

/* The reading thread parses what it reads itself while the text is in its cache (maps,
   numa_maps: parsing a line costs less than handing it to another core), until the text
   shows smaps fields: from then on (handoff) it only reads, and the caller parses. */
typedef struct {
    Parser *p;
    int fd;
    const cpu_set_t *cpus;
    long long total, rc; /* rc: 0, or parse_fd's error codes */
    int err, handoff;
} Alone;

#define ALONE_CHUNK (1 << 16) /* a read gives a page or so: the buffer stays in cache */

static void *alone_reader(void *arg) {
    Alone *a = arg;
    move_to_free_cpu(a->cpus);
    char *buf = malloc(ALONE_CHUNK);
    if (buf == NULL) {
        a->rc = -3;
        return NULL;
    }
    for (;;) {
        int eof;
        size_t n = fill_buf(a->fd, buf, ALONE_CHUNK, 0, &eof, &a->err); /* one read */
        if (a->err) {
            a->rc = -2;
            break;
        }
        if (n == 0)
            break;
        if (parse_chunk(a->p, buf, n) < 0) {
            a->rc = -1;
            break;
        }
        a->total += (long long)n;
        if (a->p->field_lines > 0) {
            a->handoff = 1;
            break;
        }
    }
    free(buf);
    return NULL;
}

/* The rest of the file read into the ring by the reading thread, parsed by the caller. */
static long long parse_ring(Parser *p, int fd, const cpu_set_t *cpus, int *err) {
    Ring r;
    memset(&r, 0, sizeof r);
    r.fd = fd;
    r.cpus = cpus;
    for (int i = 0; i < RING; i++) {
        r.buf[i] = malloc(RING_CHUNK);
        if (r.buf[i] == NULL) {
            for (int j = 0; j < i; j++)
                free(r.buf[j]);
            return -3;
        }
    }
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    pthread_t th;
    long long total = 0, rc = 0;
    if (pthread_create(&th, NULL, ring_reader, &r) != 0) {
        rc = -3;
        goto out;
    }
    for (;;) {
        pthread_mutex_lock(&r.mu);
        while (r.filled == r.parsed && !r.eof && !r.err)
            pthread_cond_wait(&r.cv, &r.mu);
        int have = r.filled > r.parsed;
        unsigned long long slot = r.parsed % RING;
        size_t len = r.len[slot];
        if (!have) {
            *err = r.err;
            pthread_mutex_unlock(&r.mu);
            rc = *err ? -2 : 0;
            break;
        }
        pthread_mutex_unlock(&r.mu);
        if (parse_chunk(p, r.buf[slot], len) < 0) {
            pthread_mutex_lock(&r.mu);
            r.stop = 1;
            pthread_cond_broadcast(&r.cv);
            pthread_mutex_unlock(&r.mu);
            rc = -1;
            break;
        }
        total += (long long)len;
        pthread_mutex_lock(&r.mu);
        r.parsed++;
        pthread_cond_broadcast(&r.cv);
        pthread_mutex_unlock(&r.mu);
    }
    pthread_join(th, NULL);
out:
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    for (int i = 0; i < RING; i++)
        free(r.buf[i]);
    return rc < 0 ? rc : total;
}

/* Returns bytes parsed, or -1 (parse error in p), -2 (read error in *err), -3 (no
 * memory or thread). */
static long long parse_fd(Parser *p, int fd, const cpu_set_t *cpus, int *err) {
    Alone a;
    memset(&a, 0, sizeof a);
    a.p = p;
    a.fd = fd;
    a.cpus = cpus;
    pthread_t th;
    if (pthread_create(&th, NULL, alone_reader, &a) != 0)
        return -3;
    pthread_join(th, NULL);
    if (a.rc < 0) {
        *err = a.err;
        return a.rc;
    }
    if (!a.handoff)
        return a.total;
    long long rest = parse_ring(p, fd, cpus, err);
    return rest < 0 ? rest : a.total + rest;
}

/* A Python iterable of CPU numbers into *set; -1 with an exception set. */
static int cpus_from(PyObject *seq, cpu_set_t *set) {
    CPU_ZERO(set);
    PyObject *it = PyObject_GetIter(seq), *item;
    if (it == NULL)
        return -1;
    while ((item = PyIter_Next(it)) != NULL) {
        long cpu = PyLong_AsLong(item);
        Py_DECREF(item);
        if (cpu == -1 && PyErr_Occurred())
            break;
        if (cpu < 0 || cpu >= CPU_SETSIZE) {
            PyErr_Format(PyExc_ValueError, "CPU %ld out of range", cpu);
            break;
        }
        CPU_SET((int)cpu, set);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *Parser_feed_fd(PyObject *obj, PyObject *args) {
    Parser *p = (Parser *)obj;
    PyObject *fdobj, *cpuobj = Py_None;
    if (!PyArg_ParseTuple(args, "O|O:feed_fd", &fdobj, &cpuobj))
        return NULL;
    int fd = PyObject_AsFileDescriptor(fdobj);
    if (fd < 0)
        return NULL;
    cpu_set_t cpuset, *cpus = NULL;
    if (cpuobj != Py_None) {
        if (cpus_from(cpuobj, &cpuset) < 0)
            return NULL;
        cpus = &cpuset;
    }
    if (check_usable(p) < 0)
        return NULL;
    long long rc;
    int err = 0;
    p->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = parse_fd(p, fd, cpus, &err);
    Py_END_ALLOW_THREADS
    p->busy = 0;
    if (rc == -1)
        return raise_failure(p);
    if (rc == -2) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (rc == -3)
        return PyErr_NoMemory();
    return PyLong_FromLongLong(rc);
}

/* The VmFlags mnemonics (by bit) and the smaps keys (by column) as lists of str. */
static PyObject *flag_names_list(Parser *p) {
    PyObject *lst = PyList_New(p->nflags);
    for (int i = 0; lst != NULL && i < p->nflags; i++) {
        PyObject *s = PyUnicode_FromString(p->flag_names[i]);
        if (s == NULL)
            Py_CLEAR(lst);
        else
            PyList_SET_ITEM(lst, i, s);
    }
    return lst;
}

static PyObject *field_names_list(Parser *p) {
    PyObject *lst = PyList_New(p->nkept);
    for (int i = 0, j = 0; lst != NULL && i < p->nfields; i++) {
        if (p->fields[i].drop)
            continue;
        PyObject *s = PyUnicode_FromString(p->fields[i].key);
        if (s == NULL)
            Py_CLEAR(lst);
        else
            PyList_SET_ITEM(lst, j++, s);
    }
    return lst;
}

/* The interned names from index `from` on. */
static PyObject *names_list_from(Parser *p, size_t from) {
    if (from > p->nnames)
        from = p->nnames;
    PyObject *lst = PyList_New((Py_ssize_t)(p->nnames - from));
    if (lst == NULL)
        return NULL;
    for (size_t i = from; i < p->nnames; i++) {
        PyObject *s = PyUnicode_DecodeFSDefaultAndSize(p->nptr[i], (Py_ssize_t)p->nlen[i]);
        if (s == NULL) {
            Py_DECREF(lst);
            return NULL;
        }
        PyList_SET_ITEM(lst, (Py_ssize_t)(i - from), s);
    }
    return lst;
}

static PyObject *names_list(Parser *p) {
    return names_list_from(p, 0);
}

static int put(PyObject *d, const char *k, PyObject *v) {
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, k, v);
    Py_DECREF(v);
    return rc;
}

#define TAKE(field, n) make_column((void *)(field), (n) * sizeof(*(field)))

static PyObject *Parser_finish(PyObject *obj, PyObject *Py_UNUSED(ignored)) {
    Parser *p = (Parser *)obj;
    if (p->busy) {
        PyErr_SetString(PyExc_RuntimeError, "parser used by two threads at once");
        return NULL;
    }
    if (p->err_line == 0 && !p->oom && p->carry_len) {
        /* last line without a newline */
        size_t len = p->carry_len;
        p->carry_len = 0;
        p->maybe_cr = 1;
        parse_line(p, p->carry, p->carry + len);
    }
    if (p->err_line || p->oom)
        return raise_failure(p);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    size_t n = p->n;
    if (put(d, "n", PyLong_FromSize_t(n)) < 0) goto fail;
    if (put(d, "lines", PyLong_FromLongLong(p->line)) < 0) goto fail;
    if (put(d, "field_lines", PyLong_FromLongLong(p->field_lines)) < 0) goto fail;
    if (put(d, "skipped_lines", PyLong_FromLongLong(p->skipped_lines)) < 0) goto fail;
    if (put(d, "anon_count", PyLong_FromLongLong(p->anon_count)) < 0) goto fail;
    if (put(d, "total_size", PyLong_FromUnsignedLongLong(p->total_size)) < 0) goto fail;
    if (put(d, "names", names_list(p)) < 0) goto fail;
    {
        PyObject *counts = PyList_New((Py_ssize_t)p->nnames);
        if (counts == NULL) goto fail;
        for (size_t i = 0; i < p->nnames; i++) {
            PyObject *c = PyLong_FromLongLong(p->ncount[i]);
            if (c == NULL) { Py_DECREF(counts); goto fail; }
            PyList_SET_ITEM(counts, (Py_ssize_t)i, c);
        }
        if (put(d, "name_counts", counts) < 0) goto fail;
    }
    if (put(d, "flag_names", flag_names_list(p)) < 0) goto fail;
    if (put(d, "has_vmflags", PyBool_FromLong(p->have_vmflags)) < 0) goto fail;
    if (put(d, "field_names", field_names_list(p)) < 0) goto fail;
    if (p->keep) {
        if (put(d, "start", TAKE(p->start, n)) < 0) { p->start = NULL; goto fail; }
        p->start = NULL;
        if (put(d, "name_id", TAKE(p->name_id, n)) < 0) { p->name_id = NULL; goto fail; }
        p->name_id = NULL;
        if (!p->numa) {
            if (put(d, "end", TAKE(p->end, n)) < 0) { p->end = NULL; goto fail; }
            p->end = NULL;
            if (put(d, "perms", TAKE(p->perms, n)) < 0) { p->perms = NULL; goto fail; }
            p->perms = NULL;
            if (put(d, "offset", TAKE(p->offset, n)) < 0) { p->offset = NULL; goto fail; }
            p->offset = NULL;
            if (put(d, "dev", TAKE(p->dev, n)) < 0) { p->dev = NULL; goto fail; }
            p->dev = NULL;
            if (put(d, "inode", TAKE(p->inode, n)) < 0) { p->inode = NULL; goto fail; }
            p->inode = NULL;
            if (p->have_vmflags) {
                if (put(d, "vmflags", TAKE(p->vmflags, n)) < 0) { p->vmflags = NULL; goto fail; }
                p->vmflags = NULL;
            }
            PyObject *cols = PyList_New(p->nkept);
            if (cols == NULL) goto fail;
            for (int i = 0, j = 0; i < p->nfields; i++) {
                if (p->fields[i].drop)
                    continue;
                PyObject *c = TAKE(p->fields[i].col, n);
                p->fields[i].col = NULL;
                if (c == NULL) { Py_DECREF(cols); goto fail; }
                PyList_SET_ITEM(cols, j++, c);
            }
            if (put(d, "fields", cols) < 0) goto fail;
        }
    }
    reset(p);
    return d;
fail:
    Py_DECREF(d);
    reset(p);
    return NULL;
}

/* The first m rows of a column as a Column; the rows after them move to the front. */
static PyObject *split_column(void *ptr, size_t elt, size_t m, size_t n) {
    if (m == 0)
        return make_column(NULL, 0);
    void *head = malloc(m * elt);
    if (head == NULL)
        return PyErr_NoMemory();
    memcpy(head, ptr, m * elt);
    memmove(ptr, (char *)ptr + m * elt, (n - m) * elt);
    return make_column(head, m * elt);
}

#define SPLIT(field) split_column((void *)(field), sizeof(*(field)), m, n)

/* take(names_from) -> dict: the rows parsed so far except the last (whose smaps fields
 * may still come), as finish() gives them, with "names" the interned names from index
 * names_from on; the parser goes on with the rest.  A caller that writes rows as the
 * text streams in keeps only a chunk's worth of columns. */
static PyObject *Parser_take(PyObject *obj, PyObject *args) {
    Parser *p = (Parser *)obj;
    Py_ssize_t names_from = 0;
    if (!PyArg_ParseTuple(args, "|n", &names_from))
        return NULL;
    if (check_usable(p) < 0)
        return NULL;
    if (p->numa || !p->keep) {
        PyErr_SetString(PyExc_ValueError, "take() is for a maps/smaps parser that keeps rows");
        return NULL;
    }
    size_t n = p->n, m = n ? n - 1 : 0;
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (put(d, "n", PyLong_FromSize_t(m)) < 0) goto fail;
    if (put(d, "has_vmflags", PyBool_FromLong(p->have_vmflags)) < 0) goto fail;
    if (put(d, "names", names_list_from(p, names_from < 0 ? 0 : (size_t)names_from)) < 0)
        goto fail;
    if (put(d, "flag_names", flag_names_list(p)) < 0) goto fail;
    if (put(d, "field_names", field_names_list(p)) < 0) goto fail;
    {
        PyObject *cols = PyList_New(p->nkept);
        if (cols == NULL) goto fail;
        for (int i = 0, j = 0; i < p->nfields; i++) {
            if (p->fields[i].drop)
                continue;
            PyObject *c = SPLIT(p->fields[i].col);
            if (c == NULL) { Py_DECREF(cols); goto fail; }
            PyList_SET_ITEM(cols, j++, c);
        }
        if (put(d, "fields", cols) < 0) goto fail;
    }
    if (put(d, "start", SPLIT(p->start)) < 0) goto fail;
    if (put(d, "end", SPLIT(p->end)) < 0) goto fail;
    if (put(d, "perms", SPLIT(p->perms)) < 0) goto fail;
    if (put(d, "offset", SPLIT(p->offset)) < 0) goto fail;
    if (put(d, "dev", SPLIT(p->dev)) < 0) goto fail;
    if (put(d, "inode", SPLIT(p->inode)) < 0) goto fail;
    if (put(d, "name_id", SPLIT(p->name_id)) < 0) goto fail;
    if (p->have_vmflags && put(d, "vmflags", SPLIT(p->vmflags)) < 0) goto fail;
    p->n = n - m;
    return d;
fail:
    /* a column split before the failure has lost its rows: the parse cannot go on */
    p->oom = 1;
    Py_DECREF(d);
    return NULL;
}

static PyObject *Parser_get_count(PyObject *obj, void *Py_UNUSED(closure)) {
    return PyLong_FromSize_t(((Parser *)obj)->n);
}

static PyObject *Parser_get_line(PyObject *obj, void *Py_UNUSED(closure)) {
    return PyLong_FromLongLong(((Parser *)obj)->line);
}

/*
 * fill(fd, buffer, low) -> (n, eof): read() into buffer until at least `low` bytes are
 * in it or the file ends, with the GIL released throughout.  A /proc seq_file returns
 * at most one page or so per read(), so a loop in C saves a Python call per page.
 */
static PyObject *fp_fill(PyObject *Py_UNUSED(module), PyObject *args) {
    int fd;
    Py_buffer buf;
    Py_ssize_t low;
    if (!PyArg_ParseTuple(args, "iw*n", &fd, &buf, &low))
        return NULL;
    size_t filled, cap = (size_t)buf.len;
    size_t want = low < 0 ? 0 : ((size_t)low < cap ? (size_t)low : cap);
    int eof, err;
    Py_BEGIN_ALLOW_THREADS
    filled = fill_buf(fd, (char *)buf.buf, cap, want, &eof, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(nO)", (Py_ssize_t)filled, eof ? Py_True : Py_False);
}

static PyMethodDef module_methods[] = {
    {"fill", fp_fill, METH_VARARGS,
     "fill(fd, buffer, low) -> (n, eof): read until low bytes or end of file (GIL released)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Parser_methods[] = {
    {"take", Parser_take, METH_VARARGS,
     "take(names_from=0) -> dict: the rows parsed so far but the last, moved out."},
    {"feed_fd", Parser_feed_fd, METH_VARARGS,
     "feed_fd(fd, cpus=None) -> bytes: read fd to its end and parse it (GIL released; "
     "the reading thread on those CPUs; see above)."},
    {"feed", Parser_feed, METH_O,
     "feed(chunk): parse the complete lines of a bytes-like chunk (GIL released)."},
    {"finish", Parser_finish, METH_NOARGS,
     "finish() -> dict of columns (Column objects), names, counts; resets the parser."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Parser_get_max_bytes(PyObject *obj, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(((Parser *)obj)->max_bytes);
}

static int Parser_set_max_bytes(PyObject *obj, PyObject *value, void *Py_UNUSED(closure)) {
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete max_bytes");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    ((Parser *)obj)->max_bytes = v;
    return 0;
}

static PyGetSetDef Parser_getset[] = {
    {"count", Parser_get_count, NULL, "rows parsed so far", NULL},
    {"line", Parser_get_line, NULL, "lines parsed so far", NULL},
    {"max_bytes", Parser_get_max_bytes, Parser_set_max_bytes,
     "if not 0, the most memory the columns may take (bytes)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vmascope.procfs._fastparse.Parser",
    .tp_basicsize = sizeof(Parser),
    .tp_dealloc = Parser_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Parser(flag_names=(), numa=False, keep=True, fields=None): streaming /proc "
              "text parser (fields: the smaps fields to keep as columns; None: all).",
    .tp_methods = Parser_methods,
    .tp_getset = Parser_getset,
    .tp_init = Parser_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastparse",
    "Streaming parser for /proc/PID/maps, smaps and numa_maps text.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastparse(void) {
    if (PyType_Ready(&ColumnType) < 0 || PyType_Ready(&ParserType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    ParseFailure = PyErr_NewException("vmascope.procfs._fastparse.ParseFailure", NULL, NULL);
    Py_INCREF(&ParserType);
    Py_INCREF(&ColumnType);
    if (ParseFailure == NULL || PyModule_AddObject(m, "ParseFailure", ParseFailure) < 0 ||
        PyModule_AddObject(m, "Parser", (PyObject *)&ParserType) < 0 ||
        PyModule_AddObject(m, "Column", (PyObject *)&ColumnType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(ParseFailure);
    return m;
}
