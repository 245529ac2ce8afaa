/* rt_db.c: the retrieval database directory: manifest, memory-mapped image store, source names and FAISS index. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "retrieval/rt.h"
#include "retrieval/rt_index.h"

/* Layout of a database directory DIR:
 *   manifest.json      the commit point: format, descriptor, weights sha256, dim, size, count,
 *                      factory, generation, index file name, committed length of names.txt.
 *                      Replaced atomically (temporary file, fsync, rename, fsync of DIR).
 *   images.u8          the image store: a 4096-byte header (magic "SPIMGDB1", u32 version 1,
 *                      u32 size, u32 channels 3, u32 header bytes 4096, u64 rows written; little
 *                      endian, rest zero), then rows of size*size*3 RGB bytes; row i = id i.
 *   names.txt          one source name per line, in id order.
 *   index.G.faiss      the FAISS index of generation G (the one the manifest names).
 *   lock               the database lock: flock()ed by every write, in any process, for as long
 *                      as it writes: an append, and the replacement of DIR by a build with
 *                      replace (`index build --force`). Opening takes no lock.
 *
 * Append (rt_db_add): under the lock, the handle first checks that it still sees the database on
 * disk: images.u8 and names.txt at DIR are the files it has open (a replaced DIR has new ones; the
 * handle's open descriptors keep the old inodes alive, so their numbers cannot be reused) and the
 * manifest is the one it read (generation, count, names length, index file); otherwise it refuses
 * with SP_ERR_STALE before writing anything. Then rows go past the committed end of images.u8 and
 * names.txt (both are first cut back to their committed length), fsync; the index with the new
 * vectors is written to index.(G+1).faiss, fsync; then the manifest naming G+1 and the new count
 * replaces the old one. The opener trusts the manifest: it ignores store rows and name bytes past
 * the committed count and reads the index file it names, so a process killed at any moment leaves
 * the old or the new database, never a mix. Left-over index files of other generations are removed
 * by the next writable opener that finds the lock free.
 *
 * Replacement (rt_db_builder_finish with replace): the new database is complete in DIR.tmp-PID;
 * under the old database's lock the two directories are exchanged atomically (renameat2; two
 * renames where the filesystem cannot), then the old one is removed, lock file included. A writer
 * that was waiting on that lock file finds, once it has it, that DIR/lock is another file now,
 * and takes the new one instead. */

#define MANIFEST_FILE "manifest.json"
#define STORE_FILE "images.u8"
#define NAMES_FILE "names.txt"
#define LOCK_FILE "lock"
#define STORE_MAGIC "SPIMGDB1"
#define STORE_VERSION 1u
#define STORE_HDR 4096
#define DB_FORMAT 1

typedef struct {
    char descriptor[64];
    char sha256[65];
    int dim, size;
    long count;
    char factory[256];
    long generation;
    char index_file[64];
    long names_bytes;
    char created[32];
} manifest;

/* Source names: a pointer per id into blocks that never move, so a returned name stays valid. */
typedef struct {
    char **ptr;
    long n, cap;
    char **blocks;
    int nblocks, blocks_cap;
    size_t used, block_cap;
} name_table;

struct rt_db {
    char dir[2048];
    int writable;
    int store_fd, names_fd;
    double lock_wait;      /* seconds an append waits for the database lock */
    manifest m;
    rt_index *index;
    size_t row_bytes;
    uint8_t *map;          /* store mapping (header included); `reserve` bytes of address space */
    size_t reserve;
    uint8_t **old_maps;    /* earlier, smaller mappings kept alive so old pointers stay valid */
    size_t *old_lens;
    int n_old;
    name_table names;
    pthread_rwlock_t rw;   /* searches and readers: shared; the commit of an append: exclusive */
    pthread_mutex_t add_mu; /* one append at a time within the process */
};

/* ---- small helpers ---- */

static sp_status path_join(char *out, size_t cap, const char *dir, const char *name) {
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap) return sp_err(SP_ERR_INVALID, "%s/%s: path too long", dir, name);
    return SP_OK;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static sp_status pwrite_all(int fd, const void *buf, size_t len, off_t off, const char *path) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return sp_err(SP_ERR_IO, "%s: write: %s", path, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
        off += w;
    }
    return SP_OK;
}

static sp_status pread_all(int fd, void *buf, size_t len, off_t off, const char *path) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return sp_err(SP_ERR_IO, "%s: read: %s", path, strerror(errno));
        }
        if (r == 0) return sp_err(SP_ERR_FORMAT, "%s: truncated (%zu bytes missing at offset %lld)", path, len, (long long)off);
        p += r;
        len -= (size_t)r;
        off += r;
    }
    return SP_OK;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static void now_iso(char *buf, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

#ifdef SP_TEST_HOOKS
/* Test hook, compiled into test builds only (-DSP_TEST_HOOKS; `make $(BUILD)/tests/semipaint_hooks`):
 * SEMIPAINT_RT_ADD_PAUSE_MS makes each step of an append say that it is done (on stderr) and
 * sleep, so that a kill or a SIGSTOP lands between any two of them. */
static void add_pause(const char *step) {
    const char *e = getenv("SEMIPAINT_RT_ADD_PAUSE_MS");
    if (!e) return;
    fprintf(stderr, "rt_db_add: %s done\n", step);
    long ms = atol(e);
    if (ms > 0 && ms < 60000) usleep((useconds_t)ms * 1000);
}
#else
#define add_pause(step) ((void)0) /* production builds: no hook */
#endif

/* A name as stored: newlines and carriage returns become '?'. Writes into out (cap >= len+2)
 * the sanitised name and a trailing newline; returns the line length. */
static size_t name_line(const char *name, char *out, size_t cap) {
    size_t n = 0;
    if (name)
        for (; name[n] && n + 2 < cap; n++) out[n] = (name[n] == '\n' || name[n] == '\r') ? '?' : name[n];
    out[n++] = '\n';
    return n;
}

/* ---- names ---- */

static sp_status names_push(name_table *t, const char *s, size_t len) {
    if (t->n == t->cap) {
        long nc = t->cap ? t->cap * 2 : 1024;
        char **np = realloc(t->ptr, (size_t)nc * sizeof *np);
        if (!np) return sp_err(SP_ERR_NOMEM, "name table");
        t->ptr = np;
        t->cap = nc;
    }
    if (t->nblocks == 0 || t->used + len + 1 > t->block_cap) {
        size_t bc = len + 1 > (1u << 20) ? len + 1 : (1u << 20);
        if (t->nblocks == t->blocks_cap) {
            int nc = t->blocks_cap ? t->blocks_cap * 2 : 8;
            char **nb = realloc(t->blocks, (size_t)nc * sizeof *nb);
            if (!nb) return sp_err(SP_ERR_NOMEM, "name table");
            t->blocks = nb;
            t->blocks_cap = nc;
        }
        char *b = malloc(bc);
        if (!b) return sp_err(SP_ERR_NOMEM, "name table");
        t->blocks[t->nblocks++] = b;
        t->used = 0;
        t->block_cap = bc;
    }
    char *dst = t->blocks[t->nblocks - 1] + t->used;
    memcpy(dst, s, len);
    dst[len] = 0;
    t->used += len + 1;
    t->ptr[t->n++] = dst;
    return SP_OK;
}

static void names_free(name_table *t) {
    for (int i = 0; i < t->nblocks; i++) free(t->blocks[i]);
    free(t->blocks);
    free(t->ptr);
    memset(t, 0, sizeof *t);
}

/* Parses the first `bytes` of a names file into `count` names. */
static sp_status names_parse(name_table *t, const char *buf, size_t bytes, long count, const char *path) {
    size_t i = 0;
    while (i < bytes) {
        const char *nl = memchr(buf + i, '\n', bytes - i);
        if (!nl) return sp_err(SP_ERR_FORMAT, "%s: the committed part ends inside a line", path);
        size_t len = (size_t)(nl - (buf + i));
        if (memchr(buf + i, 0, len)) return sp_err(SP_ERR_FORMAT, "%s: NUL byte in a name", path);
        sp_status st = names_push(t, buf + i, len);
        if (st) return st;
        i += len + 1;
    }
    if (t->n != count)
        return sp_err(SP_ERR_FORMAT, "%s holds %ld names in its committed %zu bytes, the manifest says %ld images", path,
                      t->n, bytes, count);
    return SP_OK;
}

/* ---- manifest ---- */

static char *manifest_json(const manifest *m) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char updated[32];
    now_iso(updated, sizeof updated);
    cJSON_AddNumberToObject(o, "format", DB_FORMAT);
    cJSON_AddStringToObject(o, "kind", "semipaint retrieval database");
    cJSON_AddStringToObject(o, "descriptor", m->descriptor);
    cJSON_AddStringToObject(o, "descriptor_weights_sha256", m->sha256);
    cJSON_AddNumberToObject(o, "dim", m->dim);
    cJSON_AddNumberToObject(o, "size", m->size);
    cJSON_AddNumberToObject(o, "count", (double)m->count);
    cJSON_AddStringToObject(o, "metric", "inner_product");
    cJSON_AddStringToObject(o, "factory", m->factory);
    cJSON_AddNumberToObject(o, "generation", (double)m->generation);
    cJSON_AddStringToObject(o, "index_file", m->index_file);
    cJSON_AddStringToObject(o, "store_file", STORE_FILE);
    cJSON_AddStringToObject(o, "names_file", NAMES_FILE);
    cJSON_AddNumberToObject(o, "names_bytes", (double)m->names_bytes);
    cJSON_AddStringToObject(o, "created", m->created);
    cJSON_AddStringToObject(o, "updated", updated);
    cJSON_AddStringToObject(o, "semipaint_version", SP_VERSION);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

static sp_status manifest_write(const char *dir, const manifest *m) {
    char path[4096];
    sp_status st = path_join(path, sizeof path, dir, MANIFEST_FILE);
    if (st) return st;
    char *s = manifest_json(m);
    if (!s) return sp_err(SP_ERR_NOMEM, "%s", path);
    size_t len = strlen(s);
    s[len] = '\n';
    st = sp_write_file_atomic(path, s, len + 1);
    s[len] = 0;
    cJSON_free(s);
    return st;
}

static sp_status json_str(const cJSON *o, const char *key, char *out, size_t cap, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) return sp_err(SP_ERR_FORMAT, "%s: \"%s\" is missing or not a string", path, key);
    if (strlen(v->valuestring) >= cap) return sp_err(SP_ERR_FORMAT, "%s: \"%s\" is too long", path, key);
    snprintf(out, cap, "%s", v->valuestring);
    return SP_OK;
}

static sp_status json_long(const cJSON *o, const char *key, long lo, long hi, long *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return sp_err(SP_ERR_FORMAT, "%s: \"%s\" is missing or not a number", path, key);
    double d = v->valuedouble;
    if (d != floor(d) || d < (double)lo || d > (double)hi)
        return sp_err(SP_ERR_FORMAT, "%s: \"%s\" = %g is not an integer in [%ld, %ld]", path, key, d, lo, hi);
    *out = (long)d;
    return SP_OK;
}

static sp_status manifest_read(const char *dir, manifest *m) {
    memset(m, 0, sizeof *m);
    char path[4096];
    sp_status st = path_join(path, sizeof path, dir, MANIFEST_FILE);
    if (st) return st;
    uint8_t *buf = NULL;
    size_t len = 0;
    st = sp_read_file(path, &buf, &len);
    if (st) return sp_err_wrap(st, "%s is not a semipaint database", dir);
    cJSON *o = cJSON_ParseWithLength((const char *)buf, len);
    free(buf);
    if (!o) return sp_err(SP_ERR_FORMAT, "%s: not valid JSON", path);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return sp_err(SP_ERR_FORMAT, "%s: not a JSON object", path);
    }
    long format = 0, dim = 0, size = 0;
    char store[64], names[64];
    if ((st = json_long(o, "format", 0, 1 << 20, &format, path))) goto done;
    if (format != DB_FORMAT) {
        st = sp_err(SP_ERR_FORMAT, "%s: database format %ld, this build reads format %d", path, format, DB_FORMAT);
        goto done;
    }
    if ((st = json_str(o, "descriptor", m->descriptor, sizeof m->descriptor, path))) goto done;
    if ((st = json_str(o, "descriptor_weights_sha256", m->sha256, sizeof m->sha256, path))) goto done;
    if ((st = json_long(o, "dim", 1, 1 << 20, &dim, path))) goto done;
    if ((st = json_long(o, "size", 1, 1 << 14, &size, path))) goto done;
    if ((st = json_long(o, "count", 0, 1L << 40, &m->count, path))) goto done;
    if ((st = json_str(o, "factory", m->factory, sizeof m->factory, path))) goto done;
    if ((st = json_long(o, "generation", 0, 1L << 50, &m->generation, path))) goto done;
    if ((st = json_str(o, "index_file", m->index_file, sizeof m->index_file, path))) goto done;
    if ((st = json_str(o, "store_file", store, sizeof store, path))) goto done;
    if ((st = json_str(o, "names_file", names, sizeof names, path))) goto done;
    if ((st = json_long(o, "names_bytes", 0, 1L << 50, &m->names_bytes, path))) goto done;
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(o, "created");
    snprintf(m->created, sizeof m->created, "%s", cJSON_IsString(cr) ? cr->valuestring : "");
    m->dim = (int)dim;
    m->size = (int)size;
    if (strcmp(store, STORE_FILE) || strcmp(names, NAMES_FILE) || strchr(m->index_file, '/') || !m->index_file[0] ||
        m->index_file[0] == '.') {
        st = sp_err(SP_ERR_FORMAT, "%s: unexpected file names (store \"%s\", names \"%s\", index \"%s\")", path, store,
                    names, m->index_file);
        goto done;
    }
done:
    cJSON_Delete(o);
    return st;
}

sp_status rt_db_peek_descriptor(const char *dir, char *name, size_t cap) {
    manifest m;
    sp_status st = manifest_read(dir, &m);
    if (st) return st;
    if (strlen(m.descriptor) >= cap) return sp_err(SP_ERR_INVALID, "%s: descriptor name too long", dir);
    snprintf(name, cap, "%s", m.descriptor);
    return SP_OK;
}

/* ---- the store ---- */

static void store_header(uint8_t *h, int size, uint64_t rows) {
    memset(h, 0, STORE_HDR);
    memcpy(h, STORE_MAGIC, 8);
    put_u32(h + 8, STORE_VERSION);
    put_u32(h + 12, (uint32_t)size);
    put_u32(h + 16, 3);
    put_u32(h + 20, STORE_HDR);
    put_u64(h + 24, rows);
}

/* Maps the store: `need` bytes must exist; `reserve_more` asks for room to grow in place. */
static sp_status store_map(rt_db *db, size_t need, int reserve_more, const char *path) {
    size_t want = need;
    if (reserve_more) {
        want = need * 2 > ((size_t)1 << 40) ? need * 2 : ((size_t)1 << 40);
    }
    long pg = sysconf(_SC_PAGESIZE);
    want = (want + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
    for (;;) {
        void *p = mmap(NULL, want, PROT_READ, MAP_SHARED | MAP_NORESERVE, db->store_fd, 0);
        if (p != MAP_FAILED) {
            db->map = p;
            db->reserve = want;
            return SP_OK;
        }
        if (want <= need) return sp_err(SP_ERR_IO, "%s: mmap of %zu bytes: %s", path, need, strerror(errno));
        want = want / 2 > need ? want / 2 : need;
        want = (want + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
    }
}

/* ---- the database lock ---- */

/* Takes the database lock of `dir`: an exclusive flock() on DIR/lock (created when missing),
 * retried every 10 ms for up to `wait_s` seconds while another writer holds it (or while a
 * replacement has DIR briefly missing). A lock won on a file that a replacement of DIR has since
 * unlinked is dropped and the new DIR/lock is taken instead. On success *fd holds the locked file
 * (closing it unlocks); SP_ERR_BUSY, naming the database, when the wait runs out; SP_ERR_IO when
 * the lock file cannot be opened. */
static sp_status db_lock(const char *dir, double wait_s, int *fd) {
    *fd = -1;
    char path[4096];
    sp_status st = path_join(path, sizeof path, dir, LOCK_FILE);
    if (st) return st;
    const double deadline = sp_now() + (wait_s > 0 ? wait_s : 0);
    int moved = 0;
    for (;;) {
        int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        int err = f < 0 ? errno : 0;
        if (f < 0 && err != ENOENT)
            return sp_err(SP_ERR_IO, "%s: cannot open the database lock: %s", path, strerror(err));
        if (f >= 0) {
            if (flock(f, LOCK_EX | LOCK_NB) == 0) {
                struct stat a, b;
                if (fstat(f, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
                    *fd = f;
                    return SP_OK;
                }
                close(f);
                if (moved++ < 3) continue; /* DIR was just replaced: its new lock file, at once */
            } else {
                err = errno;
                close(f);
                if (err != EWOULDBLOCK && err != EINTR)
                    return sp_err(SP_ERR_IO, "%s: flock: %s", path, strerror(err));
            }
        }
        if (sp_now() >= deadline) {
            if (err == ENOENT) return sp_err(SP_ERR_IO, "%s: %s: not a semipaint database", dir, strerror(err));
            return sp_err(SP_ERR_BUSY, "%s: another process is writing this database (it holds %s); try again when "
                          "it is done", dir, path);
        }
        usleep(10000);
    }
}

/* Under the database lock: SP_OK when DIR still holds the database this handle opened, as it
 * left it (see the layout notes above); SP_ERR_STALE saying what changed otherwise. */
static sp_status db_check_current(rt_db *db) {
    const char *files[2] = {STORE_FILE, NAMES_FILE};
    const int fds[2] = {db->store_fd, db->names_fd};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        struct stat a, b;
        sp_status st = path_join(path, sizeof path, db->dir, files[i]);
        if (st) return st;
        if (fstat(fds[i], &a) != 0) return sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        if (stat(path, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
            return sp_err(SP_ERR_STALE, "%s: the database was rebuilt (or removed) by another process, e.g. "
                          "`semipaint index build --force`, after this process opened it; reload or reopen it, "
                          "then retry", db->dir);
    }
    manifest m;
    sp_status st = manifest_read(db->dir, &m);
    if (st) return st;
    if (m.generation != db->m.generation || m.count != db->m.count || m.names_bytes != db->m.names_bytes ||
        strcmp(m.index_file, db->m.index_file))
        return sp_err(SP_ERR_STALE, "%s: another process appended to the database after this process opened it "
                      "(generation %ld and %ld images on disk, %ld and %ld here); reload or reopen it, then retry",
                      db->dir, m.generation, m.count, db->m.generation, db->m.count);
    return SP_OK;
}

/* ---- open / close ---- */

/* Removes index files of other generations and temporary files left by killed writers. */
static void remove_stale(rt_db *db) {
    DIR *d = opendir(db->dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        int stale_index = !strncmp(n, "index.", 6) && strcmp(n, db->m.index_file);
        int stale_tmp = strstr(n, ".tmp") != NULL;
        if (!stale_index && !stale_tmp) continue;
        char p[4096];
        if (path_join(p, sizeof p, db->dir, n) == SP_OK) unlinkat(dirfd(d), n, 0);
    }
    closedir(d);
}

void rt_db_close(rt_db *db) {
    if (!db) return;
    rt_index_free(db->index);
    if (db->map) munmap(db->map, db->reserve);
    for (int i = 0; i < db->n_old; i++) munmap(db->old_maps[i], db->old_lens[i]);
    free(db->old_maps);
    free(db->old_lens);
    if (db->store_fd >= 0) close(db->store_fd);
    if (db->names_fd >= 0) close(db->names_fd);
    names_free(&db->names);
    pthread_rwlock_destroy(&db->rw);
    pthread_mutex_destroy(&db->add_mu);
    free(db);
}

sp_status rt_db_open(const char *dir, rt_descriptor *desc, int writable, rt_db **out) {
    *out = NULL;
    rt_db *db = calloc(1, sizeof *db);
    if (!db) return sp_err(SP_ERR_NOMEM, "database");
    db->store_fd = db->names_fd = -1;
    db->lock_wait = RT_DB_LOCK_WAIT_S;
    /* Writer-preferring, so that a steady stream of searches cannot hold off an append's swap. */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&db->rw, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&db->add_mu, NULL);
    db->writable = writable;
    sp_status st = SP_OK;
    char path[4096];
    char *nbuf = NULL;
    if ((size_t)snprintf(db->dir, sizeof db->dir, "%s", dir) >= sizeof db->dir) {
        st = sp_err(SP_ERR_INVALID, "%s: path too long", dir);
        goto fail;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        st = sp_err(SP_ERR_IO, "%s: %s: not a semipaint database", dir, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(sb.st_mode)) {
        st = sp_err(SP_ERR_IO, "%s: not a directory: not a semipaint database", dir);
        goto fail;
    }
    if (writable) {
        if ((st = path_join(path, sizeof path, dir, MANIFEST_FILE))) goto fail;
        if (access(path, F_OK) != 0) {
            st = sp_err(SP_ERR_IO, "%s: %s: not a semipaint database", path, strerror(errno));
            goto fail;
        }
    }
    if ((st = manifest_read(dir, &db->m))) goto fail;
    manifest *m = &db->m;
    if ((st = path_join(path, sizeof path, dir, MANIFEST_FILE))) goto fail;
    if (desc) {
        if (strcmp(rt_descriptor_name(desc), m->descriptor)) {
            st = sp_err(SP_ERR_INVALID, "%s: the database uses descriptor '%s', not '%s'", path, m->descriptor,
                        rt_descriptor_name(desc));
            goto fail;
        }
        if (strcmp(rt_descriptor_weights_sha256(desc), m->sha256)) {
            st = sp_err(SP_ERR_INVALID, "%s: the database's descriptor weights have sha256 %s, the given ones %s", path,
                        m->sha256[0] ? m->sha256 : "(none)",
                        rt_descriptor_weights_sha256(desc)[0] ? rt_descriptor_weights_sha256(desc) : "(none)");
            goto fail;
        }
        if (rt_descriptor_dim(desc) != m->dim) {
            st = sp_err(SP_ERR_INVALID, "%s: the database's descriptors have %d dimensions, '%s' gives %d", path, m->dim,
                        m->descriptor, rt_descriptor_dim(desc));
            goto fail;
        }
    }

    /* store */
    if ((st = path_join(path, sizeof path, dir, STORE_FILE))) goto fail;
    db->store_fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (db->store_fd < 0) {
        st = sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    uint8_t hdr[STORE_HDR];
    if ((st = pread_all(db->store_fd, hdr, sizeof hdr, 0, path))) goto fail;
    if (memcmp(hdr, STORE_MAGIC, 8)) {
        st = sp_err(SP_ERR_FORMAT, "%s: bad magic: not a semipaint image store", path);
        goto fail;
    }
    if (get_u32(hdr + 8) != STORE_VERSION || get_u32(hdr + 16) != 3 || get_u32(hdr + 20) != STORE_HDR) {
        st = sp_err(SP_ERR_FORMAT, "%s: unsupported store (version %u, %u channels, header %u bytes)", path,
                    get_u32(hdr + 8), get_u32(hdr + 16), get_u32(hdr + 20));
        goto fail;
    }
    if ((int)get_u32(hdr + 12) != m->size) {
        st = sp_err(SP_ERR_FORMAT, "%s: images are %ux%u, the manifest says %dx%d", path, get_u32(hdr + 12),
                    get_u32(hdr + 12), m->size, m->size);
        goto fail;
    }
    uint64_t rows = get_u64(hdr + 24);
    if (rows < (uint64_t)m->count) {
        st = sp_err(SP_ERR_FORMAT, "%s holds %llu images, the manifest says %ld", path, (unsigned long long)rows, m->count);
        goto fail;
    }
    db->row_bytes = (size_t)m->size * m->size * 3;
    size_t need = STORE_HDR + (size_t)m->count * db->row_bytes;
    if (fstat(db->store_fd, &sb) != 0) {
        st = sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if ((size_t)sb.st_size < need) {
        st = sp_err(SP_ERR_FORMAT, "%s is truncated: %lld bytes, %ld images need %zu", path, (long long)sb.st_size,
                    m->count, need);
        goto fail;
    }
    if ((st = store_map(db, need, writable, path))) goto fail;

    /* names */
    if ((st = path_join(path, sizeof path, dir, NAMES_FILE))) goto fail;
    db->names_fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (db->names_fd < 0) {
        st = sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(db->names_fd, &sb) != 0) {
        st = sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (sb.st_size < m->names_bytes) {
        st = sp_err(SP_ERR_FORMAT, "%s is truncated: %lld bytes, the manifest says %ld", path, (long long)sb.st_size,
                    m->names_bytes);
        goto fail;
    }
    nbuf = malloc((size_t)m->names_bytes + 1);
    if (!nbuf) {
        st = sp_err(SP_ERR_NOMEM, "%s", path);
        goto fail;
    }
    if ((st = pread_all(db->names_fd, nbuf, (size_t)m->names_bytes, 0, path))) goto fail;
    if ((st = names_parse(&db->names, nbuf, (size_t)m->names_bytes, m->count, path))) goto fail;
    free(nbuf);
    nbuf = NULL;

    /* index */
    if ((st = path_join(path, sizeof path, dir, m->index_file))) goto fail;
    if ((st = rt_index_read(path, &db->index))) goto fail;
    if (rt_index_dim(db->index) != m->dim) {
        st = sp_err(SP_ERR_FORMAT, "%s has %d dimensions, the manifest says %d", path, rt_index_dim(db->index), m->dim);
        goto fail;
    }
    if (rt_index_count(db->index) != m->count) {
        st = sp_err(SP_ERR_FORMAT, "%s holds %ld vectors, the manifest says %ld images", path, rt_index_count(db->index),
                    m->count);
        goto fail;
    }
    if (writable) {
        /* Clean-up of killed writers' files: only under the lock, only when it is free now, and
         * only when DIR is still what was just opened (else "stale" files are another's). */
        int lfd;
        if (db_lock(dir, 0, &lfd) == SP_OK) {
            if (db_check_current(db) == SP_OK) remove_stale(db);
            close(lfd);
        }
    }
    *out = db;
    return SP_OK;
fail:
    free(nbuf);
    rt_db_close(db);
    return st;
}

/* ---- accessors ---- */

long rt_db_count(const rt_db *db) {
    pthread_rwlock_rdlock((pthread_rwlock_t *)&db->rw);
    long n = db->m.count;
    pthread_rwlock_unlock((pthread_rwlock_t *)&db->rw);
    return n;
}
int rt_db_size(const rt_db *db) { return db->m.size; }
int rt_db_dim(const rt_db *db) { return db->m.dim; }
const char *rt_db_descriptor(const rt_db *db) { return db->m.descriptor; }
const char *rt_db_weights_sha256(const rt_db *db) { return db->m.sha256; }
const char *rt_db_factory(const rt_db *db) { return db->m.factory; }
void rt_db_set_lock_wait(rt_db *db, double seconds) { db->lock_wait = seconds > 0 ? seconds : 0; }

long rt_db_generation(const rt_db *db) {
    pthread_rwlock_rdlock((pthread_rwlock_t *)&db->rw);
    long g = db->m.generation;
    pthread_rwlock_unlock((pthread_rwlock_t *)&db->rw);
    return g;
}

const char *rt_db_source_name(const rt_db *db, long id) {
    pthread_rwlock_rdlock((pthread_rwlock_t *)&db->rw);
    const char *s = id >= 0 && id < db->names.n ? db->names.ptr[id] : NULL;
    pthread_rwlock_unlock((pthread_rwlock_t *)&db->rw);
    return s;
}

const uint8_t *rt_db_image_rgb(rt_db *db, int64_t id) {
    pthread_rwlock_rdlock(&db->rw);
    const uint8_t *p = id >= 0 && id < db->m.count ? db->map + STORE_HDR + (size_t)id * db->row_bytes : NULL;
    pthread_rwlock_unlock(&db->rw);
    return p;
}

sp_status rt_db_image(rt_db *db, int64_t id, float *chw) {
    const uint8_t *p = rt_db_image_rgb(db, id);
    if (!p) return sp_err(SP_ERR_INVALID, "%s: image id %lld out of range [0, %ld)", db->dir, (long long)id, rt_db_count(db));
    /* Byte v becomes v / 255.0f, the value img_to_chw gives. */
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.0f;
    const size_t plane = (size_t)db->m.size * db->m.size;
    for (size_t i = 0; i < plane; i++) {
        chw[i] = lut[p[3 * i]];
        chw[plane + i] = lut[p[3 * i + 1]];
        chw[2 * plane + i] = lut[p[3 * i + 2]];
    }
    return SP_OK;
}

sp_status rt_db_search(rt_db *db, int n, const float *desc, int k, int64_t *ids, float *scores) {
    if (n < 0 || k <= 0) return sp_err(SP_ERR_INVALID, "search of %d queries for k = %d", n, k);
    pthread_rwlock_rdlock(&db->rw);
    sp_status st = rt_index_search(db->index, n, desc, k, scores, ids);
    pthread_rwlock_unlock(&db->rw);
    return st ? sp_err_wrap(st, "%s", db->dir) : SP_OK;
}

sp_status rt_db_set_search_param(rt_db *db, const char *name, double value) {
    pthread_rwlock_wrlock(&db->rw);
    sp_status st = rt_index_set_param(db->index, name, value);
    pthread_rwlock_unlock(&db->rw);
    return st ? sp_err_wrap(st, "%s", db->dir) : SP_OK;
}

/* Checks that each descriptor is finite and of unit norm (or zero). */
static sp_status check_desc(int n, int dim, const float *desc) {
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < dim; j++) {
            float v = desc[(size_t)i * dim + j];
            if (!isfinite(v)) return sp_err(SP_ERR_INVALID, "descriptor %d holds a non-finite value", i);
            ss += (double)v * v;
        }
        if (ss > 1e-12 && fabs(sqrt(ss) - 1.0) > 1e-3)
            return sp_err(SP_ERR_INVALID, "descriptor %d has norm %.4f; descriptors must be L2-normalised", i, sqrt(ss));
    }
    return SP_OK;
}

/* ---- append ---- */

sp_status rt_db_add(rt_db *db, int n, const uint8_t *rgb, const float *desc, const char *const *names,
                    int64_t *ids_out) {
    if (!db->writable) return sp_err(SP_ERR_INVALID, "%s: opened read-only; appends need a writable open", db->dir);
    if (n <= 0) return n == 0 ? SP_OK : sp_err(SP_ERR_INVALID, "append of %d images", n);
    sp_status st = check_desc(n, db->m.dim, desc);
    if (st) return sp_err_wrap(st, "%s", db->dir);
    pthread_mutex_lock(&db->add_mu);
    char spath[4096], npath[4096], ipath[4096], itmp[4096], old_ipath[4096];
    rt_index *nix = NULL;
    char *lines = NULL;
    int wrote_index = 0, lock_fd = -1;
    manifest nm = db->m;
    const long count = db->m.count;
    if ((st = path_join(spath, sizeof spath, db->dir, STORE_FILE))) goto fail;
    if ((st = path_join(npath, sizeof npath, db->dir, NAMES_FILE))) goto fail;
    if ((st = path_join(old_ipath, sizeof old_ipath, db->dir, db->m.index_file))) goto fail;
    nm.count = count + n;
    nm.generation = db->m.generation + 1;
    snprintf(nm.index_file, sizeof nm.index_file, "index.%ld.faiss", nm.generation);
    if ((st = path_join(ipath, sizeof ipath, db->dir, nm.index_file))) goto fail;
    if ((size_t)snprintf(itmp, sizeof itmp, "%s.tmp", ipath) >= sizeof itmp) {
        st = sp_err(SP_ERR_INVALID, "%s: path too long", ipath);
        goto fail;
    }

    /* 0. the database lock, held to the end; then is DIR still what this handle opened? */
    add_pause("begin");
    if ((st = db_lock(db->dir, db->lock_wait, &lock_fd)) || (st = db_check_current(db))) {
        st = sp_err_wrap(st, "append of %d images refused, nothing written", n);
        goto done;
    }
    add_pause("start");
    /* 1. store rows past the committed end, then the header's row count; fsync. */
    const off_t end = STORE_HDR + (off_t)count * (off_t)db->row_bytes;
    if (ftruncate(db->store_fd, end) != 0) {
        st = sp_err(SP_ERR_IO, "%s: truncate: %s", spath, strerror(errno));
        goto fail;
    }
    if ((st = pwrite_all(db->store_fd, rgb, (size_t)n * db->row_bytes, end, spath))) goto fail;
    add_pause("store rows");
    uint8_t cnt[8];
    put_u64(cnt, (uint64_t)(count + n));
    if ((st = pwrite_all(db->store_fd, cnt, 8, 24, spath))) goto fail;
    if (fdatasync(db->store_fd) != 0) {
        st = sp_err(SP_ERR_IO, "%s: fsync: %s", spath, strerror(errno));
        goto fail;
    }
    add_pause("store header");

    /* 2. names past their committed end; fsync. */
    size_t cap = 0;
    for (int i = 0; i < n; i++) cap += (names && names[i] ? strlen(names[i]) : 0) + 2;
    lines = malloc(cap + 1);
    if (!lines) {
        st = sp_err(SP_ERR_NOMEM, "names");
        goto fail;
    }
    size_t nb = 0;
    for (int i = 0; i < n; i++) {
        const char *s = names ? names[i] : NULL;
        nb += name_line(s, lines + nb, (s ? strlen(s) : 0) + 2);
    }
    if (ftruncate(db->names_fd, (off_t)db->m.names_bytes) != 0) {
        st = sp_err(SP_ERR_IO, "%s: truncate: %s", npath, strerror(errno));
        goto fail;
    }
    if ((st = pwrite_all(db->names_fd, lines, nb, (off_t)db->m.names_bytes, npath))) goto fail;
    if (fdatasync(db->names_fd) != 0) {
        st = sp_err(SP_ERR_IO, "%s: fsync: %s", npath, strerror(errno));
        goto fail;
    }
    nm.names_bytes = db->m.names_bytes + (long)nb;
    add_pause("names");

    /* 3. the new index, copy-on-write so searches go on meanwhile; written under a temporary
     * name, fsynced, renamed to the name the new manifest will give. */
    pthread_rwlock_rdlock(&db->rw);
    st = rt_index_clone(db->index, &nix);
    pthread_rwlock_unlock(&db->rw);
    if (st) goto fail;
    if ((st = rt_index_add(nix, n, desc))) goto fail;
    wrote_index = 1;
    if ((st = rt_index_write(nix, itmp))) goto fail;
    add_pause("index written");
    if (rename(itmp, ipath) != 0) {
        st = sp_err(SP_ERR_IO, "rename %s -> %s: %s", itmp, ipath, strerror(errno));
        goto fail;
    }
    fsync_dir(db->dir);
    add_pause("index renamed");

    /* 4. commit: the manifest naming the new index and count replaces the old one. */
    if ((st = manifest_write(db->dir, &nm))) goto fail;
    add_pause("manifest (committed)");

    /* 5. the new state in memory. Names first (they can fail on memory); then the swap. */
    pthread_rwlock_wrlock(&db->rw);
    size_t off = 0;
    for (int i = 0; i < n && st == SP_OK; i++) {
        const char *nl = memchr(lines + off, '\n', nb - off);
        st = names_push(&db->names, lines + off, (size_t)(nl - (lines + off)));
        off = (size_t)(nl - lines) + 1;
    }
    size_t need = STORE_HDR + (size_t)nm.count * db->row_bytes;
    if (st == SP_OK && need > db->reserve) {
        uint8_t **om = realloc(db->old_maps, (size_t)(db->n_old + 1) * sizeof *om);
        size_t *ol = om ? realloc(db->old_lens, (size_t)(db->n_old + 1) * sizeof *ol) : NULL;
        if (om) db->old_maps = om;
        if (ol) db->old_lens = ol;
        if (!om || !ol) {
            st = sp_err(SP_ERR_NOMEM, "store mappings");
        } else {
            uint8_t *prev = db->map;
            size_t prev_len = db->reserve;
            st = store_map(db, need, 1, spath);
            if (st == SP_OK) {
                db->old_maps[db->n_old] = prev;
                db->old_lens[db->n_old++] = prev_len;
            } else {
                db->map = prev;
                db->reserve = prev_len;
            }
        }
    }
    rt_index *old = NULL;
    if (st == SP_OK) {
        old = db->index;
        db->index = nix;
        nix = NULL;
        db->m = nm;
    }
    pthread_rwlock_unlock(&db->rw);
    if (st) {
        /* Committed on disk but not in this process: the database must be reopened. */
        st = sp_err_wrap(st, "%s: appended on disk, but the in-memory view could not follow; reopen it", db->dir);
        goto done;
    }
    rt_index_free(old);
    unlink(old_ipath);
    if (ids_out)
        for (int i = 0; i < n; i++) ids_out[i] = count + i;
    goto done;
fail:
    if (wrote_index) {
        unlink(itmp);
        unlink(ipath);
    }
    st = sp_err_wrap(st, "%s: append of %d images", db->dir, n);
done:
    rt_index_free(nix);
    free(lines);
    if (lock_fd >= 0) close(lock_fd); /* releases the database lock, after every write by path */
    pthread_mutex_unlock(&db->add_mu);
    return st;
}

/* ---- build ---- */

struct rt_db_builder {
    char dir[2048], tmp[2100];
    manifest m;
    int store_fd;
    FILE *names_f;
    size_t row_bytes;
    float *desc;
    size_t desc_cap; /* vectors */
    int replace, finished;
    double lock_wait; /* seconds finish waits for the lock of the database it replaces */
};

/* Removes a database directory that this code wrote (its known files, temporaries, then the
 * directory itself). Leaves anything else in place, in which case rmdir fails and says so. */
static sp_status remove_db_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? SP_OK : sp_err(SP_ERR_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, MANIFEST_FILE) || !strcmp(n, STORE_FILE) || !strcmp(n, NAMES_FILE) || !strcmp(n, LOCK_FILE) ||
            !strncmp(n, "index.", 6) || strstr(n, ".tmp"))
            unlinkat(dirfd(d), n, 0);
    }
    closedir(d);
    if (rmdir(dir) != 0) return sp_err(SP_ERR_IO, "%s: cannot remove: %s", dir, strerror(errno));
    return SP_OK;
}

sp_status rt_db_builder_new(const char *dir, const rt_descriptor *desc, const char *factory, int size, int replace,
                            rt_db_builder **out) {
    *out = NULL;
    if (size <= 0 || size > 4096) return sp_err(SP_ERR_INVALID, "image size %d", size);
    if (!factory || !*factory) factory = "Flat";
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!replace) return sp_err(SP_ERR_INVALID, "%s already exists (remove it, or replace it with --force)", dir);
        /* Replace only a database (or an empty directory), never a folder of other files. */
        char mpath[4096];
        sp_status pst = path_join(mpath, sizeof mpath, dir, MANIFEST_FILE);
        if (pst) return pst;
        if (access(mpath, F_OK) != 0 && rmdir(dir) != 0)
            return sp_err(SP_ERR_INVALID, "%s exists and is not a semipaint database: not replacing it", dir);
    }
    rt_index *probe = NULL;
    sp_status st = rt_index_new(factory, rt_descriptor_dim(desc), &probe);
    rt_index_free(probe);
    if (st) return st;
    rt_db_builder *b = calloc(1, sizeof *b);
    if (!b) return sp_err(SP_ERR_NOMEM, "builder");
    b->store_fd = -1;
    b->replace = replace;
    b->lock_wait = RT_DB_BUILD_LOCK_WAIT_S;
    char path[4096];
    if ((size_t)snprintf(b->dir, sizeof b->dir, "%s", dir) >= sizeof b->dir ||
        (size_t)snprintf(b->tmp, sizeof b->tmp, "%s.tmp-%d", dir, (int)getpid()) >= sizeof b->tmp) {
        free(b);
        return sp_err(SP_ERR_INVALID, "%s: path too long", dir);
    }
    manifest *m = &b->m;
    snprintf(m->descriptor, sizeof m->descriptor, "%s", rt_descriptor_name(desc));
    snprintf(m->sha256, sizeof m->sha256, "%s", rt_descriptor_weights_sha256(desc));
    snprintf(m->factory, sizeof m->factory, "%s", factory);
    m->dim = rt_descriptor_dim(desc);
    m->size = size;
    m->generation = 1;
    snprintf(m->index_file, sizeof m->index_file, "index.1.faiss");
    now_iso(m->created, sizeof m->created);
    b->row_bytes = (size_t)size * size * 3;
    remove_db_dir(b->tmp);
    if (mkdir(b->tmp, 0755) != 0) {
        st = sp_err(SP_ERR_IO, "%s: mkdir: %s", b->tmp, strerror(errno));
        free(b);
        return st;
    }
    if ((st = path_join(path, sizeof path, b->tmp, STORE_FILE))) goto fail;
    b->store_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (b->store_fd < 0) {
        st = sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    uint8_t hdr[STORE_HDR];
    store_header(hdr, size, 0);
    if ((st = pwrite_all(b->store_fd, hdr, sizeof hdr, 0, path))) goto fail;
    if ((st = path_join(path, sizeof path, b->tmp, NAMES_FILE))) goto fail;
    b->names_f = fopen(path, "wbe");
    if (!b->names_f) {
        st = sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    *out = b;
    return SP_OK;
fail:
    rt_db_builder_free(b);
    return st;
}

long rt_db_builder_count(const rt_db_builder *b) { return b->m.count; }

void rt_db_builder_set_lock_wait(rt_db_builder *b, double seconds) { b->lock_wait = seconds > 0 ? seconds : 0; }

sp_status rt_db_builder_add(rt_db_builder *b, int n, const uint8_t *rgb, const float *desc, const char *const *names) {
    if (b->finished) return sp_err(SP_ERR_INVALID, "%s: the build is already finished", b->dir);
    if (n <= 0) return n == 0 ? SP_OK : sp_err(SP_ERR_INVALID, "append of %d images", n);
    sp_status st = check_desc(n, b->m.dim, desc);
    if (st) return st;
    char path[4096];
    if ((st = path_join(path, sizeof path, b->tmp, STORE_FILE))) return st;
    if (b->m.count + n > (long)b->desc_cap) {
        size_t nc = b->desc_cap ? b->desc_cap : 1024;
        while (nc < (size_t)(b->m.count + n)) nc *= 2;
        float *nd = realloc(b->desc, nc * (size_t)b->m.dim * sizeof *nd);
        if (!nd) return sp_err(SP_ERR_NOMEM, "descriptors of %zu images", nc);
        b->desc = nd;
        b->desc_cap = nc;
    }
    off_t off = STORE_HDR + (off_t)b->m.count * (off_t)b->row_bytes;
    if ((st = pwrite_all(b->store_fd, rgb, (size_t)n * b->row_bytes, off, path))) return st;
    char line[4200];
    for (int i = 0; i < n; i++) {
        size_t len = name_line(names ? names[i] : NULL, line, sizeof line);
        if (fwrite(line, 1, len, b->names_f) != len) return sp_err(SP_ERR_IO, "%s/%s: write", b->tmp, NAMES_FILE);
        b->m.names_bytes += (long)len;
    }
    memcpy(b->desc + (size_t)b->m.count * b->m.dim, desc, (size_t)n * b->m.dim * sizeof *desc);
    b->m.count += n;
    return SP_OK;
}

sp_status rt_db_builder_finish(rt_db_builder *b) {
    if (b->finished) return sp_err(SP_ERR_INVALID, "%s: the build is already finished", b->dir);
    char path[4096], old[2200];
    rt_index *ix = NULL;
    sp_status st;
    if ((st = path_join(path, sizeof path, b->tmp, NAMES_FILE))) return st;
    if (fflush(b->names_f) != 0 || fsync(fileno(b->names_f)) != 0) return sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
    if ((st = path_join(path, sizeof path, b->tmp, STORE_FILE))) return st;
    uint8_t cnt[8];
    put_u64(cnt, (uint64_t)b->m.count);
    if ((st = pwrite_all(b->store_fd, cnt, 8, 24, path))) return st;
    if (fsync(b->store_fd) != 0) return sp_err(SP_ERR_IO, "%s: fsync: %s", path, strerror(errno));

    double t0 = sp_now();
    if ((st = rt_index_new(b->m.factory, b->m.dim, &ix))) return st;
    if (!rt_index_is_trained(ix)) {
        if ((st = rt_index_train(ix, b->m.count, b->desc))) goto fail;
        SP_INFO("index: trained %s on %ld vectors in %.1f s", b->m.factory, b->m.count, sp_now() - t0);
    }
    if ((st = rt_index_add(ix, b->m.count, b->desc))) goto fail;
    if ((st = path_join(path, sizeof path, b->tmp, b->m.index_file))) goto fail;
    if ((st = rt_index_write(ix, path))) goto fail;
    rt_index_free(ix);
    ix = NULL;
    if ((st = manifest_write(b->tmp, &b->m))) return st;

    /* Into place: a plain rename, or for --force, under the old database's lock, the new one
     * exchanged with it (or, where the filesystem cannot exchange, the old one aside and the new
     * one in), then the old one removed with its lock file. */
    struct stat sb;
    if (stat(b->dir, &sb) == 0) {
        if (!b->replace) return sp_err(SP_ERR_INVALID, "%s appeared during the build; not replaced", b->dir);
        if ((st = path_join(path, sizeof path, b->dir, MANIFEST_FILE))) return st;
        if (access(path, F_OK) != 0)
            return sp_err(SP_ERR_INVALID, "%s exists and is not a semipaint database: not replacing it", b->dir);
        int lock_fd;
        if ((st = db_lock(b->dir, b->lock_wait, &lock_fd)))
            return sp_err_wrap(st, "%s not replaced (it is as it was; the new database was not kept)", b->dir);
        if (renameat2(AT_FDCWD, b->tmp, AT_FDCWD, b->dir, RENAME_EXCHANGE) == 0) {
            snprintf(old, sizeof old, "%s", b->tmp); /* the old database, now under the temporary name */
        } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
            snprintf(old, sizeof old, "%s.old-%d.tmp", b->dir, (int)getpid());
            if (rename(b->dir, old) != 0) {
                st = sp_err(SP_ERR_IO, "rename %s -> %s: %s", b->dir, old, strerror(errno));
                close(lock_fd);
                return st;
            }
            if (rename(b->tmp, b->dir) != 0) {
                st = sp_err(SP_ERR_IO, "rename %s -> %s: %s", b->tmp, b->dir, strerror(errno));
                rename(old, b->dir);
                close(lock_fd);
                return st;
            }
        } else {
            st = sp_err(SP_ERR_IO, "exchange %s <-> %s: %s", b->tmp, b->dir, strerror(errno));
            close(lock_fd);
            return st;
        }
        if ((st = remove_db_dir(old))) SP_WARN("%s", sp_err_msg());
        close(lock_fd); /* waiters find DIR/lock is a new file now, and take that */
    } else if (rename(b->tmp, b->dir) != 0) {
        return sp_err(SP_ERR_IO, "rename %s -> %s: %s", b->tmp, b->dir, strerror(errno));
    }
    char parent[2048];
    snprintf(parent, sizeof parent, "%s", b->dir);
    char *slash = strrchr(parent, '/');
    if (slash == parent) parent[1] = 0;
    else if (slash) *slash = 0;
    else snprintf(parent, sizeof parent, ".");
    fsync_dir(parent);
    b->finished = 1;
    return SP_OK;
fail:
    rt_index_free(ix);
    return st;
}

void rt_db_builder_free(rt_db_builder *b) {
    if (!b) return;
    if (b->names_f) fclose(b->names_f);
    if (b->store_fd >= 0) close(b->store_fd);
    if (!b->finished) remove_db_dir(b->tmp);
    free(b->desc);
    free(b);
}
