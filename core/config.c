/* config.c: the configuration table (every key with its type, bounds, default and help), YAML loading, env overrides, printing. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "model/nn.h" /* model.device and model.precision take the engine's names (nn_device_names) */

typedef enum { CFG_T_INT, CFG_T_SIZE, CFG_T_BOOL, CFG_T_STR, CFG_T_ENUM } cfg_type;

/* One key: where it lives in cfg_config, how its text is checked, and its default. */
typedef struct {
    const char *section, *key;
    cfg_type type;
    size_t offset;
    size_t cap;                 /* CFG_T_STR: buffer size */
    long min, max;              /* CFG_T_INT, CFG_T_SIZE */
    const char *const *choices; /* CFG_T_ENUM: names, NULL-terminated; the value is the index */
    const char *def;            /* default, in the same text form a file uses */
    const char *help;
} cfg_entry;

static const char *const strategies[] = {"crop", "resize", NULL};
static const char *const formats[] = {"input", "png", "jpeg", "webp", NULL};
static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"json", "text", NULL};

#define F(sec, key) offsetof(cfg_config, sec.key)
#define S(sec, key) sizeof(((cfg_config *)0)->sec.key)

static const cfg_entry table[] = {
    {"server", "listen", CFG_T_STR, F(server, listen), S(server, listen), 0, 0, NULL, "0.0.0.0:8080",
     "address to listen on: HOST:PORT, :PORT (all interfaces) or [IPV6]:PORT; port 0 picks a free one"},
    {"server", "http_threads", CFG_T_INT, F(server, http_threads), 0, 1, 256, NULL, "4",
     "HTTP threads; they read and parse requests and send answers, never decode, encode or wait for the model"},
    {"server", "work_threads", CFG_T_INT, F(server, work_threads), 0, 1, 256, NULL, "4",
     "threads that decode uploads, paste results and encode answers, off the HTTP threads"},
    {"server", "max_body_bytes", CFG_T_SIZE, F(server, max_body_bytes), 0, 1024, 1L << 31, NULL, "32MiB",
     "largest request body; larger ones are answered 413 (suffixes KiB, MiB, GiB)"},
    {"server", "max_image_pixels", CFG_T_SIZE, F(server, max_image_pixels), 0, 1, 1L << 30, NULL, "24000000",
     "largest image (width x height), checked from the header before decoding; 413 above"},
    {"server", "request_timeout_ms", CFG_T_INT, F(server, request_timeout_ms), 0, 100, 3600000, NULL, "30000",
     "deadline of a request from the arrival of its headers: its body by then (408), its answer by then (504); also "
     "the idle timeout of a connection"},
    {"server", "shutdown_grace_ms", CFG_T_INT, F(server, shutdown_grace_ms), 0, 0, 3600000, NULL, "10000",
     "on SIGTERM, how long in-flight requests may take to finish"},
    {"server", "auth_token_file", CFG_T_STR, F(server, auth_token_file), S(server, auth_token_file), 0, 0, NULL, "",
     "file holding the bearer token for mutating routes (POST /v1/index/images, /v1/admin/reload); empty = those routes are off"},
    {"server", "images_require_token", CFG_T_BOOL, F(server, images_require_token), 0, 0, 1, NULL, "false",
     "GET /v1/images/{id} (database images) needs the bearer token of server.auth_token_file too"},
    {"server", "web_ui", CFG_T_BOOL, F(server, web_ui), 0, 0, 1, NULL, "true", "serve the web demo page at GET /"},
    {"server", "max_connections", CFG_T_INT, F(server, max_connections), 0, 4, 65536, NULL, "1024",
     "open HTTP connections at most; beyond, new connections are closed at once"},
    {"server", "max_connections_per_client", CFG_T_INT, F(server, max_connections_per_client), 0, 0, 65536, NULL,
     "128", "open connections from one client IP address at most; 0 = no limit (set 0 behind a proxy)"},
    {"server", "max_buffered_bytes", CFG_T_SIZE, F(server, max_buffered_bytes), 0, 1024, 1L << 40, NULL, "256MiB",
     "request body bytes held in memory by all requests together; a body that would pass it is answered 503"},
    {"server", "max_pixels_in_flight", CFG_T_SIZE, F(server, max_pixels_in_flight), 0, 1, 1L << 40, NULL, "32000000",
     "decoded image pixels held by all requests together (at least server.max_image_pixels); beyond, 503"},

    {"batching", "max_batch", CFG_T_INT, F(batching, max_batch), 0, 1, 256, NULL, "8",
     "most crops in one batched forward pass"},
    {"batching", "max_delay_ms", CFG_T_INT, F(batching, max_delay_ms), 0, 0, 10000, NULL, "5",
     "longest time a batch waits to fill after its first crop"},
    {"batching", "queue_capacity", CFG_T_INT, F(batching, queue_capacity), 0, 1, 1000000, NULL, "64",
     "most crops waiting for the executor; beyond it requests are answered 503 with Retry-After"},

    {"model", "device", CFG_T_ENUM, F(model, device), 0, 0, 0, nn_device_names, "auto",
     "compute device; auto uses a GPU when this build has CUDA and one answers"},
    {"model", "gpu", CFG_T_INT, F(model, gpu), 0, 0, 63, NULL, "0", "CUDA device ordinal"},
    {"model", "precision", CFG_T_ENUM, F(model, precision), 0, 0, 0, nn_precision_names, "fp32",
     "arithmetic on the GPU (the CPU always computes in fp32)"},
    {"model", "cpu_threads", CFG_T_INT, F(model, cpu_threads), 0, 0, 1024, NULL, "0",
     "threads of the CPU backend; 0 = every online core"},
    {"model", "coarse", CFG_T_STR, F(model, coarse), S(model, coarse), 0, 0, NULL, "weights/pconv.safetensors",
     "pconv_unet weights (the coarse pass)"},
    {"model", "refine", CFG_T_STR, F(model, refine), S(model, refine), 0, 0, NULL, "weights/sim1.safetensors",
     "simk_unet weights used with a database (Sim-K, K >= 1)"},
    {"model", "refine_fallback", CFG_T_STR, F(model, refine_fallback), S(model, refine_fallback), 0, 0, NULL,
     "weights/sim0.safetensors", "simk_unet weights with K = 0, used when no database is configured"},
    {"model", "telea_blend", CFG_T_BOOL, F(model, telea_blend), 0, 0, 1, NULL, "true",
     "blend each net's fill with Telea's near the hole border as its weights' telea_blend table says, and the "
     "pasted answer with Telea's fill of the image as its telea_blend_image table says; false serves the networks "
     "alone (faster, worse on thin holes)"},
    {"model", "family", CFG_T_STR, F(model, family), S(model, family), 0, 0, NULL, "faces",
     "name of the family the model.* and retrieval.* keys make (requests choose it with model=NAME); the "
     "`families` section adds others"},
    {"model", "router", CFG_T_STR, F(model, router), S(model, router), 0, 0, NULL, "",
     "router weights for model=auto (made by training/fit_router.py): which family a request fits and whether its "
     "networks are expected to beat Telea; empty = auto runs the first family's networks"},

    {"retrieval", "database", CFG_T_STR, F(retrieval, database), S(retrieval, database), 0, 0, NULL, "",
     "database directory made by `semipaint index build`; empty = none, the service runs Sim-0"},
    {"retrieval", "descriptor", CFG_T_STR, F(retrieval, descriptor), S(retrieval, descriptor), 0, 0, NULL, "auto",
     "descriptor name (`semipaint index info` shows a database's); auto = the one the database was built with"},
    {"retrieval", "descriptor_weights", CFG_T_STR, F(retrieval, descriptor_weights), S(retrieval, descriptor_weights), 0,
     0, NULL, "", "vgg16_features weights, needed only by a vgg16_features descriptor"},
    {"retrieval", "nprobe", CFG_T_INT, F(retrieval, nprobe), 0, 1, 65536, NULL, "16",
     "inverted lists visited per query by an IVF index (exact indexes ignore it)"},

    {"inpaint", "strategy", CFG_T_ENUM, F(inpaint, strategy), 0, 0, 0, strategies, "crop",
     "images not at the working size: crop = a square around each hole region, resize = the whole image"},
    {"inpaint", "crop_margin", CFG_T_INT, F(inpaint, crop_margin), 0, 0, 4096, NULL, "32",
     "pixels of context kept around each hole region's bounding box"},
    {"inpaint", "default_format", CFG_T_ENUM, F(inpaint, default_format), 0, 0, 0, formats, "input",
     "format of answers when the request names none; input = the format of the uploaded image"},
    {"inpaint", "jpeg_quality", CFG_T_INT, F(inpaint, jpeg_quality), 0, 1, 100, NULL, "92",
     "JPEG quality of answers when the request gives none"},
    {"inpaint", "max_work_pixels", CFG_T_SIZE, F(inpaint, max_work_pixels), 0, 1, 1L << 40, NULL, "4194304",
     "working pixels (crops x working size squared) one request may send to the networks, at most "
     "batching.queue_capacity crops; more hole regions are grouped on a grid into fewer, larger crops"},
    {"inpaint", "telea_threads", CFG_T_INT, F(inpaint, telea_threads), 0, 1, 64, NULL, "1",
     "threads that run method=telea requests, off the HTTP threads (each holds about 45 bytes per pixel of its image)"},

    {"logging", "level", CFG_T_ENUM, F(logging, level), 0, 0, 0, levels, "info", "least severe level logged"},
    {"logging", "format", CFG_T_ENUM, F(logging, format), 0, 0, 0, log_formats, "json",
     "json = one JSON object per line; text = human-readable lines"},
};
#define NENTRIES (sizeof table / sizeof table[0])

/* The keys of one family of the `families` section (offsets in cfg_family). */
#define FF(key) offsetof(cfg_family, key)
#define FS(key) sizeof(((cfg_family *)0)->key)
static const cfg_entry ftable[] = {
    {"families", "coarse", CFG_T_STR, FF(coarse), FS(coarse), 0, 0, NULL, "", "pconv_unet weights (the coarse pass)"},
    {"families", "refine", CFG_T_STR, FF(refine), FS(refine), 0, 0, NULL, "",
     "simk_unet weights used with a database (Sim-K, K >= 1)"},
    {"families", "refine_fallback", CFG_T_STR, FF(refine_fallback), FS(refine_fallback), 0, 0, NULL, "",
     "simk_unet weights with K = 0, used when the family has no database"},
    {"families", "telea_blend", CFG_T_BOOL, FF(telea_blend), 0, 0, 1, NULL, "true",
     "blend the nets' fills with Telea near the hole border (the weights' telea_blend and telea_blend_image tables)"},
    {"families", "database", CFG_T_STR, FF(database), FS(database), 0, 0, NULL, "",
     "the family's database directory; empty = none (Sim-0)"},
    {"families", "descriptor", CFG_T_STR, FF(descriptor), FS(descriptor), 0, 0, NULL, "auto",
     "descriptor name; auto = the one the database was built with"},
    {"families", "descriptor_weights", CFG_T_STR, FF(descriptor_weights), FS(descriptor_weights), 0, 0, NULL, "",
     "vgg16_features weights, needed only by a vgg16_features descriptor"},
    {"families", "nprobe", CFG_T_INT, FF(nprobe), 0, 1, 65536, NULL, "16", "inverted lists visited per query (IVF)"},
};
#define NFENTRIES (sizeof ftable / sizeof ftable[0])

static const char *const sections[] = {"server", "batching", "model", "retrieval", "inpaint", "logging", "families",
                                       NULL};
#define NSECTIONS (sizeof sections / sizeof sections[0] - 1)

static const cfg_entry *find_entry(const char *section, const char *key) {
    for (size_t i = 0; i < NENTRIES; i++)
        if (!strcmp(table[i].section, section) && !strcmp(table[i].key, key)) return &table[i];
    return NULL;
}

static int known_section(const char *section) {
    for (size_t i = 0; i < NSECTIONS; i++)
        if (!strcmp(sections[i], section)) return 1;
    return 0;
}

/* "a, b, c": the keys of a section or the names of a list. */
static void join_keys(const char *section, char *out, size_t cap) {
    size_t k = 0;
    out[0] = 0;
    const int fam = !strcmp(section, "families");
    const cfg_entry *t = fam ? ftable : table;
    const size_t n = fam ? NFENTRIES : NENTRIES;
    for (size_t i = 0; i < n && k < cap; i++) {
        if (strcmp(t[i].section, section)) continue;
        k += (size_t)snprintf(out + k, cap - k, "%s%s", k ? ", " : "", t[i].key);
    }
}

static void join_list(const char *const *names, char *out, size_t cap) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; names[i] && k < cap; i++) k += (size_t)snprintf(out + k, cap - k, "%s%s", i ? ", " : "", names[i]);
}

static void describe_allowed(const cfg_entry *e, char *out, size_t cap) {
    switch (e->type) {
    case CFG_T_INT: snprintf(out, cap, "an integer in %ld..%ld", e->min, e->max); break;
    case CFG_T_SIZE: snprintf(out, cap, "a size in %ld..%ld (suffixes KiB, MiB, GiB allowed)", e->min, e->max); break;
    case CFG_T_BOOL: snprintf(out, cap, "true or false"); break;
    case CFG_T_STR: snprintf(out, cap, "a string of at most %zu bytes", e->cap - 1); break;
    case CFG_T_ENUM: {
        char list[256];
        join_list(e->choices, list, sizeof list);
        snprintf(out, cap, "one of %s", list);
        break;
    }
    }
}

/* Parses a decimal integer with an optional binary size suffix (CFG_T_SIZE only). */
static int parse_long(const char *s, int allow_suffix, long *out) {
    if (!*s) return -1;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || errno) return -1;
    long mul = 1;
    if (*end && allow_suffix) {
        if (!strcmp(end, "K") || !strcmp(end, "k") || !strcmp(end, "KiB")) mul = 1L << 10;
        else if (!strcmp(end, "M") || !strcmp(end, "MiB")) mul = 1L << 20;
        else if (!strcmp(end, "G") || !strcmp(end, "GiB")) mul = 1L << 30;
        else return -1;
    } else if (*end) {
        return -1;
    }
    if (v > LONG_MAX / mul || v < LONG_MIN / mul) return -1;
    *out = v * mul;
    return 0;
}

/* Sets entry `e` of the structure at `base` (a cfg_config, or a cfg_family for ftable's). */
static sp_status set_entry(void *base, const cfg_entry *e, const char *value, const char *where) {
    char allowed[384];
    char *field = (char *)base + e->offset;
    switch (e->type) {
    case CFG_T_INT:
    case CFG_T_SIZE: {
        long v;
        if (parse_long(value, e->type == CFG_T_SIZE, &v) || v < e->min || v > e->max) {
            describe_allowed(e, allowed, sizeof allowed);
            return sp_err(SP_ERR_INVALID, "%s: %s.%s: '%s' is not allowed; allowed: %s", where, e->section, e->key,
                          value, allowed);
        }
        if (e->type == CFG_T_INT) *(int *)field = (int)v;
        else *(long *)field = v;
        return SP_OK;
    }
    case CFG_T_BOOL: {
        static const char *const yes[] = {"true", "True", "TRUE", "yes", "on", "1", NULL};
        static const char *const no[] = {"false", "False", "FALSE", "no", "off", "0", NULL};
        for (int i = 0; yes[i]; i++)
            if (!strcmp(value, yes[i])) return *(int *)field = 1, SP_OK;
        for (int i = 0; no[i]; i++)
            if (!strcmp(value, no[i])) return *(int *)field = 0, SP_OK;
        return sp_err(SP_ERR_INVALID, "%s: %s.%s: '%s' is not allowed; allowed: true or false", where, e->section,
                      e->key, value);
    }
    case CFG_T_STR: {
        size_t n = strlen(value);
        if (n >= e->cap) {
            describe_allowed(e, allowed, sizeof allowed);
            return sp_err(SP_ERR_INVALID, "%s: %s.%s: value of %zu bytes is too long; allowed: %s", where, e->section,
                          e->key, n, allowed);
        }
        memset(field, 0, e->cap); /* no stale bytes after the NUL: configs compare with memcmp */
        memcpy(field, value, n);
        if (!strcmp(e->section, "server") && !strcmp(e->key, "listen")) {
            char host[256];
            int port;
            if (cfg_parse_listen(value, host, sizeof host, &port))
                return sp_err(SP_ERR_INVALID, "%s: server.listen: '%s' is not allowed; allowed: HOST:PORT, :PORT or "
                              "[IPV6]:PORT with PORT in 0..65535", where, value);
        }
        return SP_OK;
    }
    case CFG_T_ENUM:
        for (int i = 0; e->choices[i]; i++)
            if (!strcmp(value, e->choices[i])) return *(int *)field = i, SP_OK;
        describe_allowed(e, allowed, sizeof allowed);
        return sp_err(SP_ERR_INVALID, "%s: %s.%s: '%s' is not allowed; allowed: %s", where, e->section, e->key, value,
                      allowed);
    }
    return sp_err(SP_ERR_INVALID, "%s: %s.%s: bad table entry", where, e->section, e->key);
}

/* A family name: 1..CFG_NAME_MAX-1 of a-z and 0-9, starting with a letter; not "auto". */
static int valid_family_name(const char *n) {
    size_t l = strlen(n);
    if (l < 1 || l >= CFG_NAME_MAX || !(n[0] >= 'a' && n[0] <= 'z') || !strcmp(n, "auto")) return 0;
    for (size_t i = 0; i < l; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9'))) return 0;
    return 1;
}

/* The `families` section's family `name`, added with the defaults when new (NULL with an error
 * when the name is not allowed or there is no room). */
static cfg_family *family_slot(cfg_config *c, const char *name, const char *where) {
    for (int i = 0; i < c->nextra; i++)
        if (!strcmp(c->extra[i].name, name)) return &c->extra[i];
    if (!valid_family_name(name)) {
        sp_err(SP_ERR_INVALID, "%s: families: '%s' is not a family name; allowed: 1 to %d of a-z and 0-9, starting "
               "with a letter, not auto", where, name, CFG_NAME_MAX - 1);
        return NULL;
    }
    if (c->nextra >= CFG_MAX_FAMILIES - 1) {
        sp_err(SP_ERR_INVALID, "%s: families: '%s' is one family too many; at most %d besides model.family's", where,
               name, CFG_MAX_FAMILIES - 1);
        return NULL;
    }
    cfg_family *f = &c->extra[c->nextra++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    for (size_t i = 0; i < NFENTRIES; i++) {
        sp_status st = set_entry(f, &ftable[i], ftable[i].def, "default");
        SP_ASSERT(st == SP_OK);
    }
    return f;
}

/* families.NAME.KEY = value */
static sp_status set_family_key(cfg_config *c, const char *name, const char *key, const char *value,
                                const char *where) {
    const cfg_entry *e = NULL;
    for (size_t i = 0; i < NFENTRIES; i++)
        if (!strcmp(ftable[i].key, key)) e = &ftable[i];
    if (!e) {
        char keys[512];
        join_keys("families", keys, sizeof keys);
        return sp_err(SP_ERR_INVALID, "%s: unknown key '%s' of family %s; allowed keys: %s", where, key, name, keys);
    }
    cfg_family *f = family_slot(c, name, where);
    if (!f) return SP_ERR_INVALID;
    sp_status st = set_entry(f, e, value, where);
    if (st) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", sp_err_msg());
        return sp_err(st, "%s (family %s)", msg, name);
    }
    return SP_OK;
}

sp_status cfg_set(cfg_config *c, const char *section, const char *key, const char *value, const char *where) {
    char keys[512];
    if (!strcmp(section, "families")) {
        const char *dot = strchr(key, '.');
        char name[CFG_NAME_MAX + 1];
        if (!dot || (size_t)(dot - key) > CFG_NAME_MAX)
            return sp_err(SP_ERR_INVALID, "%s: families: '%s' is not NAME.KEY", where, key);
        snprintf(name, sizeof name, "%.*s", (int)(dot - key), key);
        return set_family_key(c, name, dot + 1, value, where);
    }
    if (!known_section(section)) {
        join_list(sections, keys, sizeof keys);
        return sp_err(SP_ERR_INVALID, "%s: unknown section '%s'; allowed sections: %s", where, section, keys);
    }
    const cfg_entry *e = find_entry(section, key);
    if (!e) {
        join_keys(section, keys, sizeof keys);
        return sp_err(SP_ERR_INVALID, "%s: unknown key '%s.%s'; allowed keys of %s: %s", where, section, key, section,
                      keys);
    }
    return set_entry(c, e, value, where);
}

void cfg_defaults(cfg_config *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NENTRIES; i++) {
        sp_status st = set_entry(c, &table[i], table[i].def, "default");
        SP_ASSERT(st == SP_OK);
    }
}

/* ---- YAML ---- */

typedef struct {
    yaml_parser_t parser;
    const char *path;
} yaml_reader;

/* Reads the next event; errors name the file and line. */
static sp_status next_event(yaml_reader *r, yaml_event_t *ev) {
    if (!yaml_parser_parse(&r->parser, ev)) {
        return sp_err(SP_ERR_FORMAT, "%s:%zu: malformed YAML: %s", r->path, r->parser.problem_mark.line + 1,
                      r->parser.problem ? r->parser.problem : "parse error");
    }
    if (ev->type == YAML_ALIAS_EVENT) {
        size_t line = ev->start_mark.line + 1;
        yaml_event_delete(ev);
        return sp_err(SP_ERR_FORMAT, "%s:%zu: YAML aliases are not supported in the configuration", r->path, line);
    }
    return SP_OK;
}

static const char *event_what(const yaml_event_t *ev) {
    switch (ev->type) {
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_SCALAR_EVENT: return "a scalar";
    default: return "something else";
    }
}

/* Parses one section's mapping (after its MAPPING_START) into `c`. */
static sp_status parse_section(yaml_reader *r, cfg_config *c, const char *section) {
    char seen[NENTRIES] = {0};
    for (;;) {
        yaml_event_t kev, vev;
        sp_status st = next_event(r, &kev);
        if (st) return st;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return SP_OK;
        }
        size_t line = kev.start_mark.line + 1;
        if (kev.type != YAML_SCALAR_EVENT) {
            const char *what = event_what(&kev);
            yaml_event_delete(&kev);
            return sp_err(SP_ERR_FORMAT, "%s:%zu: expected a key of section %s, found %s", r->path, line, section, what);
        }
        char key[128];
        snprintf(key, sizeof key, "%s", (const char *)kev.data.scalar.value);
        yaml_event_delete(&kev);
        char where[CFG_PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%zu", r->path, line);
        const cfg_entry *e = find_entry(section, key);
        if (!e) return cfg_set(c, section, key, "", where); /* reports the unknown key with the allowed ones */
        size_t idx = (size_t)(e - table);
        if (seen[idx]) return sp_err(SP_ERR_INVALID, "%s: key %s.%s given twice", where, section, key);
        seen[idx] = 1;
        st = next_event(r, &vev);
        if (st) return st;
        line = vev.start_mark.line + 1;
        snprintf(where, sizeof where, "%s:%zu", r->path, line);
        if (vev.type != YAML_SCALAR_EVENT) {
            char allowed[384];
            describe_allowed(e, allowed, sizeof allowed);
            const char *what = event_what(&vev);
            yaml_event_delete(&vev);
            return sp_err(SP_ERR_INVALID, "%s: %s.%s: found %s; allowed: %s", where, section, key, what, allowed);
        }
        const char *val = (const char *)vev.data.scalar.value;
        /* A plain empty or ~ value is YAML's null: only strings may be empty. */
        int is_null = vev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && (!*val || !strcmp(val, "~") || !strcmp(val, "null"));
        st = set_entry(c, e, is_null && e->type == CFG_T_STR ? "" : val, where);
        yaml_event_delete(&vev);
        if (st) return st;
    }
}

/* Parses the `families` section (after its MAPPING_START): NAME: {KEY: VALUE, ...} per family. */
static sp_status parse_families(yaml_reader *r, cfg_config *c) {
    for (;;) {
        yaml_event_t ev;
        sp_status st = next_event(r, &ev);
        if (st) return st;
        if (ev.type == YAML_MAPPING_END_EVENT) return yaml_event_delete(&ev), SP_OK;
        size_t line = ev.start_mark.line + 1;
        if (ev.type != YAML_SCALAR_EVENT) {
            const char *what = event_what(&ev);
            yaml_event_delete(&ev);
            return sp_err(SP_ERR_FORMAT, "%s:%zu: expected a family name in section families, found %s", r->path, line,
                          what);
        }
        char name[128], where[CFG_PATH_MAX + 32];
        snprintf(name, sizeof name, "%s", (const char *)ev.data.scalar.value);
        yaml_event_delete(&ev);
        snprintf(where, sizeof where, "%s:%zu", r->path, line);
        for (int i = 0; i < c->nextra; i++)
            if (!strcmp(c->extra[i].name, name)) return sp_err(SP_ERR_INVALID, "%s: family %s given twice", where, name);
        if (!family_slot(c, name, where)) return SP_ERR_INVALID;
        if ((st = next_event(r, &ev))) return st;
        if (ev.type != YAML_MAPPING_START_EVENT) {
            char keys[512];
            const char *what = event_what(&ev);
            yaml_event_delete(&ev);
            join_keys("families", keys, sizeof keys);
            return sp_err(SP_ERR_FORMAT, "%s: family %s must be a mapping of keys (%s), found %s", where, name, keys,
                          what);
        }
        yaml_event_delete(&ev);
        char seen[NFENTRIES] = {0};
        for (;;) {
            yaml_event_t kev, vev;
            if ((st = next_event(r, &kev))) return st;
            if (kev.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&kev);
                break;
            }
            snprintf(where, sizeof where, "%s:%zu", r->path, kev.start_mark.line + 1);
            if (kev.type != YAML_SCALAR_EVENT) {
                const char *what = event_what(&kev);
                yaml_event_delete(&kev);
                return sp_err(SP_ERR_FORMAT, "%s: expected a key of family %s, found %s", where, name, what);
            }
            char key[128];
            snprintf(key, sizeof key, "%s", (const char *)kev.data.scalar.value);
            yaml_event_delete(&kev);
            for (size_t i = 0; i < NFENTRIES; i++)
                if (!strcmp(ftable[i].key, key)) {
                    if (seen[i]) return sp_err(SP_ERR_INVALID, "%s: key %s of family %s given twice", where, key, name);
                    seen[i] = 1;
                }
            if ((st = next_event(r, &vev))) return st;
            if (vev.type != YAML_SCALAR_EVENT) {
                const char *what = event_what(&vev);
                yaml_event_delete(&vev);
                return sp_err(SP_ERR_INVALID, "%s: families.%s.%s: found %s; allowed: a scalar", where, name, key, what);
            }
            const char *val = (const char *)vev.data.scalar.value;
            int is_null = vev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                          (!*val || !strcmp(val, "~") || !strcmp(val, "null"));
            st = set_family_key(c, name, key, is_null ? "" : val, where);
            yaml_event_delete(&vev);
            if (st) return st;
        }
    }
}

static sp_status parse_document(yaml_reader *r, cfg_config *c) {
    yaml_event_t ev;
    sp_status st;
    char seen[NSECTIONS] = {0};
    /* STREAM_START, then DOCUMENT_START or STREAM_END (an empty file) */
    if ((st = next_event(r, &ev))) return st;
    yaml_event_delete(&ev);
    if ((st = next_event(r, &ev))) return st;
    if (ev.type == YAML_STREAM_END_EVENT) return yaml_event_delete(&ev), SP_OK;
    yaml_event_delete(&ev);
    if ((st = next_event(r, &ev))) return st;
    if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev.data.scalar.length) {
        yaml_event_delete(&ev); /* a document holding only comments */
        return SP_OK;
    }
    if (ev.type != YAML_MAPPING_START_EVENT) {
        size_t line = ev.start_mark.line + 1;
        const char *what = event_what(&ev);
        yaml_event_delete(&ev);
        return sp_err(SP_ERR_FORMAT, "%s:%zu: expected a mapping of sections, found %s", r->path, line, what);
    }
    yaml_event_delete(&ev);
    for (;;) {
        if ((st = next_event(r, &ev))) return st;
        if (ev.type == YAML_MAPPING_END_EVENT) break;
        size_t line = ev.start_mark.line + 1;
        if (ev.type != YAML_SCALAR_EVENT) {
            const char *what = event_what(&ev);
            yaml_event_delete(&ev);
            return sp_err(SP_ERR_FORMAT, "%s:%zu: expected a section name, found %s", r->path, line, what);
        }
        char section[128];
        snprintf(section, sizeof section, "%s", (const char *)ev.data.scalar.value);
        yaml_event_delete(&ev);
        size_t si = NSECTIONS;
        for (size_t i = 0; i < NSECTIONS; i++)
            if (!strcmp(sections[i], section)) si = i;
        if (si == NSECTIONS) {
            char list[256];
            join_list(sections, list, sizeof list);
            return sp_err(SP_ERR_INVALID, "%s:%zu: unknown section '%s'; allowed sections: %s", r->path, line, section,
                          list);
        }
        if (seen[si]) return sp_err(SP_ERR_INVALID, "%s:%zu: section %s given twice", r->path, line, section);
        seen[si] = 1;
        if ((st = next_event(r, &ev))) return st;
        line = ev.start_mark.line + 1;
        if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev.data.scalar.length) {
            yaml_event_delete(&ev); /* "section:" with nothing under it */
            continue;
        }
        if (ev.type != YAML_MAPPING_START_EVENT) {
            char keys[512];
            const char *what = event_what(&ev);
            yaml_event_delete(&ev);
            join_keys(section, keys, sizeof keys);
            return sp_err(SP_ERR_FORMAT, "%s:%zu: section %s must be a mapping of keys (%s), found %s", r->path, line,
                          section, keys, what);
        }
        yaml_event_delete(&ev);
        if ((st = !strcmp(section, "families") ? parse_families(r, c) : parse_section(r, c, section))) return st;
    }
    yaml_event_delete(&ev);
    /* DOCUMENT_END, then STREAM_END: a second document is refused */
    if ((st = next_event(r, &ev))) return st;
    yaml_event_delete(&ev);
    if ((st = next_event(r, &ev))) return st;
    int more = ev.type != YAML_STREAM_END_EVENT;
    size_t line = ev.start_mark.line + 1;
    yaml_event_delete(&ev);
    if (more) return sp_err(SP_ERR_FORMAT, "%s:%zu: only one YAML document is allowed", r->path, line);
    return SP_OK;
}

sp_status cfg_load_file(cfg_config *c, const char *path) {
    uint8_t *buf = NULL;
    size_t len = 0;
    sp_status st = sp_read_file(path, &buf, &len);
    if (st) return st;
    yaml_reader r = {.path = path};
    if (!yaml_parser_initialize(&r.parser)) {
        free(buf);
        return sp_err(SP_ERR_NOMEM, "%s: cannot initialise the YAML parser", path);
    }
    yaml_parser_set_input_string(&r.parser, buf, len);
    /* Parse into a copy so that a failing file leaves `c` untouched. */
    cfg_config tmp = *c;
    st = parse_document(&r, &tmp);
    if (!st) *c = tmp;
    yaml_parser_delete(&r.parser);
    free(buf);
    return st;
}

sp_status cfg_apply_env(cfg_config *c, char *const *envp) {
    if (!envp) return SP_OK;
    for (; *envp; envp++) {
        const char *var = *envp;
        if (strncmp(var, "SEMIPAINT_", 10)) continue;
        const char *eq = strchr(var, '=');
        if (!eq) continue;
        const char *rest = var + 10;
        if (!strncmp(rest, "FAMILIES_", 9)) { /* SEMIPAINT_FAMILIES_NAME_KEY: names have no '_' */
            const char *nm = rest + 9, *us = strchr(nm, '_');
            char where[192], name[CFG_NAME_MAX + 1], key[128];
            snprintf(where, sizeof where, "environment %.*s", (int)(eq - var), var);
            if (!us || us > eq || (size_t)(us - nm) > CFG_NAME_MAX || (size_t)(eq - us - 1) >= sizeof key)
                return sp_err(SP_ERR_INVALID, "%s: expected SEMIPAINT_FAMILIES_<NAME>_<KEY>", where);
            size_t nl = (size_t)(us - nm), kl = (size_t)(eq - us - 1);
            for (size_t i = 0; i < nl; i++) name[i] = (char)tolower((unsigned char)nm[i]);
            name[nl] = 0;
            for (size_t i = 0; i < kl; i++) key[i] = (char)tolower((unsigned char)us[1 + i]);
            key[kl] = 0;
            sp_status st = set_family_key(c, name, key, eq + 1, where);
            if (st) return st;
            continue;
        }
        for (size_t s = 0; s < NSECTIONS; s++) {
            size_t sl = strlen(sections[s]);
            if ((size_t)(eq - rest) <= sl + 1 || rest[sl] != '_') continue;
            int match = 1;
            for (size_t i = 0; i < sl; i++)
                if (rest[i] != toupper((unsigned char)sections[s][i])) match = 0;
            if (!match) continue;
            char key[128];
            size_t kl = (size_t)(eq - (rest + sl + 1));
            if (kl >= sizeof key) kl = sizeof key - 1;
            for (size_t i = 0; i < kl; i++) key[i] = (char)tolower((unsigned char)rest[sl + 1 + i]);
            key[kl] = 0;
            char where[192];
            snprintf(where, sizeof where, "environment %.*s", (int)(eq - var), var);
            sp_status st = cfg_set(c, sections[s], key, eq + 1, where);
            if (st) return st;
            break;
        }
    }
    return SP_OK;
}

sp_status cfg_check(const cfg_config *c) {
    if (c->server.max_pixels_in_flight < c->server.max_image_pixels)
        return sp_err(SP_ERR_INVALID,
                      "server.max_pixels_in_flight (%ld) is smaller than server.max_image_pixels (%ld): an image at "
                      "the size limit could never be served",
                      c->server.max_pixels_in_flight, c->server.max_image_pixels);
    if (c->server.max_buffered_bytes < c->server.max_body_bytes)
        return sp_err(SP_ERR_INVALID,
                      "server.max_buffered_bytes (%ld) is smaller than server.max_body_bytes (%ld): a body at the "
                      "size limit could never be received",
                      c->server.max_buffered_bytes, c->server.max_body_bytes);
    if (c->server.images_require_token && !c->server.auth_token_file[0])
        return sp_err(SP_ERR_INVALID, "server.images_require_token is true but no server.auth_token_file is set: "
                                      "GET /v1/images/{id} could never be answered");
    if (!valid_family_name(c->model.family))
        return sp_err(SP_ERR_INVALID, "model.family: '%s' is not a family name; allowed: 1 to %d of a-z and 0-9, "
                      "starting with a letter, not auto", c->model.family, CFG_NAME_MAX - 1);
    for (int i = 0; i < c->nextra; i++)
        if (!strcmp(c->extra[i].name, c->model.family))
            return sp_err(SP_ERR_INVALID, "families.%s: the family model.family (model.* and retrieval.*) already has "
                          "this name", c->extra[i].name);
    return SP_OK;
}

const char *cfg_family_key(int index, const char *name, const char *key, char *out, size_t cap) {
    static const char *const db_keys[] = {"database", "descriptor", "descriptor_weights", "nprobe", NULL};
    int db = 0;
    for (int i = 0; db_keys[i]; i++) db |= !strcmp(key, db_keys[i]);
    if (index == 0) snprintf(out, cap, "%s.%s", db ? "retrieval" : "model", key);
    else snprintf(out, cap, "families.%.*s.%s", CFG_NAME_MAX - 1, name, key);
    return out;
}

int cfg_families(const cfg_config *c, cfg_family *out) {
    cfg_family *f = &out[0];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", c->model.family);
    memcpy(f->coarse, c->model.coarse, sizeof f->coarse);
    memcpy(f->refine, c->model.refine, sizeof f->refine);
    memcpy(f->refine_fallback, c->model.refine_fallback, sizeof f->refine_fallback);
    f->telea_blend = c->model.telea_blend;
    memcpy(f->database, c->retrieval.database, sizeof f->database);
    memcpy(f->descriptor, c->retrieval.descriptor, sizeof f->descriptor);
    memcpy(f->descriptor_weights, c->retrieval.descriptor_weights, sizeof f->descriptor_weights);
    f->nprobe = c->retrieval.nprobe;
    for (int i = 0; i < c->nextra && i < CFG_MAX_FAMILIES - 1; i++) out[1 + i] = c->extra[i];
    return 1 + (c->nextra < CFG_MAX_FAMILIES - 1 ? c->nextra : CFG_MAX_FAMILIES - 1);
}

sp_status cfg_load(cfg_config *c, const char *path, char *const *envp) {
    cfg_defaults(c);
    if (path) {
        sp_status st = cfg_load_file(c, path);
        if (st) return st;
    }
    sp_status st = cfg_apply_env(c, envp);
    return st ? st : cfg_check(c);
}

img_plan_strategy cfg_plan_strategy(const cfg_config *c) {
    switch ((cfg_strategy)c->inpaint.strategy) {
    case CFG_STRATEGY_RESIZE: return IMG_PLAN_RESIZE;
    case CFG_STRATEGY_CROP: break;
    }
    return IMG_PLAN_CROP;
}

const char *cfg_enum_name(const char *section, const char *key, int value) {
    const cfg_entry *e = find_entry(section, key);
    if (!e || e->type != CFG_T_ENUM || value < 0) return "?";
    for (int i = 0; e->choices[i]; i++)
        if (i == value) return e->choices[i];
    return "?";
}

/* Writes `s` as a YAML double-quoted scalar. */
static void print_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\x%02x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

void cfg_print(const cfg_config *c, FILE *f) {
    const char *cur = NULL;
    fprintf(f, "# semipaintd effective configuration (defaults, then the file, then SEMIPAINT_* variables)\n");
    for (size_t i = 0; i < NENTRIES; i++) {
        const cfg_entry *e = &table[i];
        const char *field = (const char *)c + e->offset;
        if (!cur || strcmp(cur, e->section)) {
            fprintf(f, "%s%s:\n", cur ? "\n" : "", e->section);
            cur = e->section;
        }
        fprintf(f, "  # %s\n  %s: ", e->help, e->key);
        switch (e->type) {
        case CFG_T_INT: fprintf(f, "%d", *(const int *)field); break;
        case CFG_T_SIZE: fprintf(f, "%ld", *(const long *)field); break;
        case CFG_T_BOOL: fprintf(f, "%s", *(const int *)field ? "true" : "false"); break;
        case CFG_T_STR: print_quoted(f, field); break;
        case CFG_T_ENUM: fprintf(f, "%s", e->choices[*(const int *)field]); break;
        }
        fputc('\n', f);
    }
    fprintf(f, "\n# more model families besides model.family's, each with these keys (model=NAME chooses one)\nfamilies:%s\n",
            c->nextra ? "" : " {}");
    for (int k = 0; k < c->nextra; k++) {
        const cfg_family *fam = &c->extra[k];
        fprintf(f, "  %s:\n", fam->name);
        for (size_t i = 0; i < NFENTRIES; i++) {
            const cfg_entry *e = &ftable[i];
            const char *field = (const char *)fam + e->offset;
            fprintf(f, "    # %s\n    %s: ", e->help, e->key);
            if (e->type == CFG_T_STR) print_quoted(f, field);
            else if (e->type == CFG_T_BOOL) fprintf(f, "%s", *(const int *)field ? "true" : "false");
            else fprintf(f, "%d", *(const int *)field);
            fputc('\n', f);
        }
    }
}

sp_status cfg_parse_listen(const char *listen, char *host, size_t hostcap, int *port) {
    const char *colon;
    const char *h0 = listen, *h1;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') return sp_err(SP_ERR_INVALID, "listen '%s': expected [IPV6]:PORT", listen);
        h0 = listen + 1;
        h1 = close;
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon) return sp_err(SP_ERR_INVALID, "listen '%s': expected HOST:PORT", listen);
        h1 = colon;
        if (memchr(listen, ':', (size_t)(colon - listen)))
            return sp_err(SP_ERR_INVALID, "listen '%s': write an IPv6 address as [ADDR]:PORT", listen);
    }
    size_t hl = (size_t)(h1 - h0);
    if (hl >= hostcap) return sp_err(SP_ERR_INVALID, "listen '%s': host too long", listen);
    for (size_t i = 0; i < hl; i++) {
        unsigned char ch = (unsigned char)h0[i];
        if (!(isalnum(ch) || ch == '.' || ch == '-' || ch == ':' || ch == '*'))
            return sp_err(SP_ERR_INVALID, "listen '%s': bad character in host", listen);
    }
    memcpy(host, h0, hl);
    host[hl] = 0;
    if (!strcmp(host, "*")) host[0] = 0;
    long p;
    if (parse_long(colon + 1, 0, &p) || p < 0 || p > 65535)
        return sp_err(SP_ERR_INVALID, "listen '%s': port must be 0..65535", listen);
    *port = (int)p;
    return SP_OK;
}
