/* st.c: safetensors reader (mmap + strict header validation) and a small F32 writer. */
#include "model/st.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20)
#define ST_MAX_NUMEL (1ll << 40) /* most elements of one tensor (and of one dimension) */

struct st_file {
    char *path;
    uint8_t *map;
    size_t size;
    int mapped;          /* map is an mmap of the file (st_open), not the caller's buffer (st_open_mem) */
    const uint8_t *data; /* start of the data area */
    size_t data_size;
    st_tensor *t;
    int n;
    char **meta_keys, **meta_vals;
    int nmeta;
    char sha[65];
};

static const struct {
    const char *name;
    int size;
} dtypes[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8},
              {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1}};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

const char *st_dtype_name(st_dtype d) { return (int)d >= 0 && (int)d < N_DTYPES ? dtypes[d].name : "?"; }

/* File order: by data offset; a zero-size tensor before a larger one at the same offset, then by name. */
static int cmp_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void st_close(st_file *f) {
    if (!f) return;
    if (f->map && f->mapped) munmap(f->map, f->size);
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->t);
    free(f->path);
    free(f);
}

/* Reads a JSON number that must be a non-negative integer below 2^53. */
static int json_uint(const cJSON *j, int64_t *v) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (d < 0 || d > 9007199254740992.0 || floor(d) != d) return 0;
    *v = (int64_t)d;
    return 1;
}

static sp_status parse_entry(st_file *f, const cJSON *e, st_tensor *t) {
    const char *nm = e->string;
    if (!cJSON_IsObject(e)) return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': entry is not an object", f->path, nm);
    /* cJSON keeps repeated keys and finds the first: a repeated one would be read ambiguously */
    static const char *const keys[3] = {"dtype", "shape", "data_offsets"};
    int seen[3] = {0, 0, 0};
    const cJSON *k;
    cJSON_ArrayForEach(k, e) {
        for (int i = 0; i < 3; i++)
            if (k->string && !strcmp(k->string, keys[i]) && seen[i]++)
                return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': key '%s' appears twice", f->path, nm, keys[i]);
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': dtype missing or not a string", f->path, nm);
    int di = -1;
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(dt->valuestring, dtypes[i].name)) di = i;
    if (di < 0)
        return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", f->path, nm, dt->valuestring);
    if (!cJSON_IsArray(sh)) return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': missing shape", f->path, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS) return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': %d dimensions", f->path, nm, nd);
    t->dtype = (st_dtype)di;
    t->ndim = nd;
    t->numel = 1;
    const cJSON *d = sh->child;
    for (int i = 0; i < nd; i++, d = d->next) {
        if (!json_uint(d, &t->shape[i]) || t->shape[i] > ST_MAX_NUMEL)
            return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': bad shape entry %d", f->path, nm, i);
        if (t->shape[i] && t->numel > ST_MAX_NUMEL / t->shape[i])
            return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': shape too large (over 2^40 elements)", f->path, nm);
        t->numel *= t->shape[i];
    }
    int64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(off->child, &b) ||
        !json_uint(off->child->next, &en) || b > en)
        return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': bad data_offsets", f->path, nm);
    if ((uint64_t)en > f->data_size)
        return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': data [%lld,%lld) past the end of the file (%zu data bytes)",
                      f->path, nm, (long long)b, (long long)en, f->data_size);
    if (en - b != t->numel * dtypes[di].size)
        return sp_err(SP_ERR_FORMAT, "%s: tensor '%s': %lld data bytes for %lld %s elements", f->path, nm,
                      (long long)(en - b), (long long)t->numel, dtypes[di].name);
    t->data = f->data + b;
    t->nbytes = (size_t)(en - b);
    t->name = strdup(nm);
    if (!t->name) return sp_err(SP_ERR_NOMEM, "%s: out of memory", f->path);
    return SP_OK;
}

static sp_status parse_meta(st_file *f, const cJSON *m) {
    if (!cJSON_IsObject(m)) return sp_err(SP_ERR_FORMAT, "%s: __metadata__ is not an object", f->path);
    int n = cJSON_GetArraySize(m);
    f->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    f->meta_vals = calloc((size_t)n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals) return sp_err(SP_ERR_NOMEM, "%s: out of memory", f->path);
    const cJSON *e;
    cJSON_ArrayForEach(e, m) {
        if (!cJSON_IsString(e) || !e->valuestring)
            return sp_err(SP_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", f->path, e->string);
        if (f->nmeta >= n) return sp_err(SP_ERR_FORMAT, "%s: __metadata__ changed while read", f->path);
        f->meta_keys[f->nmeta] = strdup(e->string);
        f->meta_vals[f->nmeta] = strdup(e->valuestring);
        f->nmeta++;
        if (!f->meta_keys[f->nmeta - 1] || !f->meta_vals[f->nmeta - 1])
            return sp_err(SP_ERR_NOMEM, "%s: out of memory", f->path);
    }
    /* a repeated key would make st_meta's answer depend on the order: refused (sorted copy, n log n) */
    char **sorted = malloc(((size_t)f->nmeta + 1) * sizeof *sorted);
    if (!sorted) return sp_err(SP_ERR_NOMEM, "%s: out of memory", f->path);
    memcpy(sorted, f->meta_keys, (size_t)f->nmeta * sizeof *sorted);
    qsort(sorted, (size_t)f->nmeta, sizeof *sorted, cmp_str);
    for (int i = 1; i < f->nmeta; i++)
        if (!strcmp(sorted[i], sorted[i - 1])) {
            sp_status st = sp_err(SP_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", f->path, sorted[i]);
            free(sorted);
            return st;
        }
    free(sorted);
    return SP_OK;
}

/* Checks the header of f->map (f->size bytes) and fills the tensors and metadata; f->path names
 * the file in messages. */
static sp_status st_parse(st_file *f) {
    const char *path = f->path;
    sp_status st = SP_OK;
    cJSON *root = NULL;
    if (f->size < 8)
        return sp_err(SP_ERR_FORMAT, "%s: truncated: %zu bytes, not even a header length", path, f->size);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)f->map[i] << (8 * i);
    if (hlen > f->size - 8 || hlen > ST_MAX_HEADER)
        return sp_err(SP_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                      (unsigned long long)hlen, f->size);
    f->data = f->map + 8 + hlen;
    f->data_size = f->size - 8 - hlen;
    const char *hdr = (const char *)f->map + 8, *hend = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &hend, 0);
    if (!root || !cJSON_IsObject(root)) {
        st = sp_err(SP_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    /* after the object only padding (spaces) may follow; cJSON stops at the object's end */
    for (const char *p = hend; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            st = sp_err(SP_ERR_FORMAT, "%s: header has bytes after its JSON object (at header byte %zu)", path,
                        (size_t)(p - hdr));
            goto done;
        }
    int n = cJSON_GetArraySize(root);
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    if (!f->t) {
        st = sp_err(SP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int nmeta_objects = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (nmeta_objects++) {
                st = sp_err(SP_ERR_FORMAT, "%s: __metadata__ appears twice", path);
                goto done;
            }
            if ((st = parse_meta(f, e))) goto done;
            continue;
        }
        if (f->n >= n) {
            st = sp_err(SP_ERR_FORMAT, "%s: header changed while read", path);
            goto done;
        }
        if ((st = parse_entry(f, e, &f->t[f->n]))) goto done;
        f->n++;
    }
    /* repeated names: sorted by name, neighbours compared (n log n, not n^2) */
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_name);
    for (int i = 1; i < f->n; i++)
        if (!strcmp(f->t[i].name, f->t[i - 1].name)) {
            st = sp_err(SP_ERR_FORMAT, "%s: tensor '%s' appears twice", path, f->t[i].name);
            goto done;
        }
    /* the data area: the tensors in offset order cover it exactly, without overlap or gap */
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_offset);
    const uint8_t *at = f->data;
    for (int i = 0; i < f->n; i++) {
        const st_tensor *t = &f->t[i];
        if (t->data < at) {
            st = sp_err(SP_ERR_FORMAT, "%s: tensor '%s' overlaps tensor '%s'", path, t->name, f->t[i - 1].name);
            goto done;
        }
        if (t->data > at) {
            st = sp_err(SP_ERR_FORMAT, "%s: tensor '%s' starts at data byte %zu, leaving %zu unused bytes before it",
                        path, t->name, (size_t)(t->data - f->data), (size_t)(t->data - at));
            goto done;
        }
        at = t->data + t->nbytes;
    }
    if (at != f->data + f->data_size) {
        st = sp_err(SP_ERR_FORMAT, "%s: %zu data bytes after the last tensor's data belong to no tensor", path,
                    (size_t)(f->data + f->data_size - at));
        goto done;
    }
    sp_sha256_hex(f->map, f->size, f->sha);
done:
    cJSON_Delete(root);
    return st;
}

sp_status st_open(const char *path, st_file **out) {
    *out = NULL;
    sp_status st = SP_OK;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return sp_err(SP_ERR_NOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        st = sp_err(SP_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        st = sp_err(SP_ERR_FORMAT, "%s: truncated: %zu bytes, not even a header length", path, f->size);
        goto fail;
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        st = sp_err(SP_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    f->mapped = 1;
    if ((st = st_parse(f))) goto fail;
    *out = f;
    return SP_OK;
fail:
    st_close(f);
    return st;
}

sp_status st_open_mem(const uint8_t *buf, size_t len, const char *name, st_file **out) {
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name))) {
        free(f);
        return sp_err(SP_ERR_NOMEM, "%s: out of memory", name);
    }
    f->map = (uint8_t *)buf; /* never written: the views are const and st_close leaves it alone */
    f->size = len;
    sp_status st = st_parse(f);
    if (st) {
        st_close(f);
        return st;
    }
    *out = f;
    return SP_OK;
}

const char *st_path(const st_file *f) { return f->path; }
int st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }
const char *st_sha256(const st_file *f) { return f->sha; }

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 31, man = h & 1023, bits;
    if (ex == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            ex = 127 - 15 + 1;
            while (!(man & 1024)) {
                man <<= 1;
                ex--;
            }
            bits = sign | ex << 23 | (man & 1023) << 13;
        }
    } else if (ex == 31) {
        bits = sign | 0xff << 23 | man << 13;
    } else {
        bits = sign | (ex - 15 + 127) << 23 | man << 13;
    }
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

sp_status st_read_f32(const st_file *f, const char *name, int ndim, const int64_t *dims, float *out) {
    const st_tensor *t = st_find(f, name);
    if (!t) return sp_err(SP_ERR_INVALID, "%s: missing tensor '%s'", f->path, name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
    if (!ok) {
        char want[128] = "", got[128] = "";
        size_t a = 0, b = 0;
        for (int i = 0; i < ndim; i++) a += (size_t)snprintf(want + a, sizeof want - a, i ? ",%lld" : "%lld", (long long)dims[i]);
        for (int i = 0; i < t->ndim; i++)
            b += (size_t)snprintf(got + b, sizeof got - b, i ? ",%lld" : "%lld", (long long)t->shape[i]);
        return sp_err(SP_ERR_INVALID, "%s: tensor '%s' has shape [%s], expected [%s]", f->path, name, got, want);
    }
    switch (t->dtype) {
    case ST_F32: memcpy(out, t->data, t->nbytes); break;
    case ST_F16:
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            out[i] = half_to_f32(h);
        }
        break;
    case ST_BF16:
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
        }
        break;
    default:
        return sp_err(SP_ERR_INVALID, "%s: tensor '%s' has dtype %s; F32, F16 or BF16 needed", f->path, name,
                      dtypes[t->dtype].name);
    }
    return SP_OK;
}

sp_status st_write_f32(const char *path, int n, const char *const *names, const int *ndims,
                       const int64_t *const *shapes, const float *const *data, const char *meta_json) {
    cJSON *root = cJSON_CreateObject();
    size_t off = 0;
    sp_status st = SP_OK;
    char *hdr = NULL;
    uint8_t *buf = NULL;
    if (!root) return sp_err(SP_ERR_NOMEM, "out of memory");
    if (meta_json) {
        cJSON *m = cJSON_Parse(meta_json);
        if (!m) {
            st = sp_err(SP_ERR_INVALID, "%s: metadata is not JSON", path);
            goto done;
        }
        cJSON_AddItemToObject(root, "__metadata__", m);
    }
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject(), *sh = cJSON_CreateArray(), *of = cJSON_CreateArray();
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) {
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shapes[i][d]));
            numel *= shapes[i][d];
        }
        cJSON_AddItemToObject(e, "dtype", cJSON_CreateString("F32"));
        cJSON_AddItemToObject(e, "shape", sh);
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += (size_t)numel * 4;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToObject(e, "data_offsets", of);
        cJSON_AddItemToObject(root, names[i], e);
    }
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) {
        st = sp_err(SP_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    buf = malloc(8 + padded + off);
    if (!buf) {
        st = sp_err(SP_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    size_t p = 8 + padded;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) numel *= shapes[i][d];
        memcpy(buf + p, data[i], (size_t)numel * 4);
        p += (size_t)numel * 4;
    }
    st = sp_write_file_atomic(path, buf, p);
done:
    free(buf);
    free(hdr);
    cJSON_Delete(root);
    return st;
}
