/* config.h: semipaintd's configuration (docs/configuration.md): one table of keys giving defaults, YAML parsing, env overrides and printing. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdio.h>

#include "common/sp.h"
#include "imaging/plan.h"

/* inpaint.strategy */
typedef enum { CFG_STRATEGY_CROP = 0, CFG_STRATEGY_RESIZE } cfg_strategy;
/* inpaint.default_format: the answer's format when a request does not name one */
typedef enum { CFG_FORMAT_INPUT = 0, CFG_FORMAT_PNG, CFG_FORMAT_JPEG, CFG_FORMAT_WEBP } cfg_format;
/* model.device and model.precision use the order of nn_device and nn_precision (nn.h). */
typedef enum { CFG_DEVICE_AUTO = 0, CFG_DEVICE_CPU, CFG_DEVICE_CUDA } cfg_device;
typedef enum { CFG_PREC_FP32 = 0, CFG_PREC_TF32, CFG_PREC_FP16 } cfg_precision;
/* logging.format */
typedef enum { CFG_LOG_JSON = 0, CFG_LOG_TEXT } cfg_log_format;

#define CFG_PATH_MAX 1024
#define CFG_NAME_MAX 32     /* a family name: 1-31 of a-z and 0-9, starting with a letter */
#define CFG_MAX_FAMILIES 8  /* model families at most, the first (model.* and retrieval.*) included */

/* One model family (docs/configuration.md#families): its networks, blend and database. The first
 * family is model.family's, made of the model.* and retrieval.* keys; the others come from the
 * `families` section, one mapping of these keys per name. */
typedef struct {
    char name[CFG_NAME_MAX];
    char coarse[CFG_PATH_MAX];             /* pconv_unet weights */
    char refine[CFG_PATH_MAX];             /* simk_unet (K >= 1), used with a database */
    char refine_fallback[CFG_PATH_MAX];    /* simk_unet (K = 0), used without one */
    int telea_blend;                       /* apply the weights' telea_blend tables */
    char database[CFG_PATH_MAX];           /* "" = none (Sim-0) */
    char descriptor[128];                  /* or "auto" = the database's */
    char descriptor_weights[CFG_PATH_MAX]; /* vgg16_features weights for a vgg16 descriptor */
    int nprobe;                            /* IVF cells visited per query */
} cfg_family;

/* The effective configuration. Every field has a default (cfg_defaults); paths are taken as
 * given, relative ones against the daemon's working directory. */
typedef struct {
    struct {
        char listen[256];             /* "HOST:PORT", ":PORT" or "[V6]:PORT"; port 0 = any free port */
        int http_threads;             /* HTTP threads: connections, parsing, sending */
        int work_threads;             /* threads that decode, paste and encode images */
        long max_body_bytes;          /* largest request body accepted (413 above) */
        long max_image_pixels;        /* largest decoded image, width*height (413 above) */
        int request_timeout_ms;       /* deadline of a request from its arrival (504), and the idle timeout of a connection */
        int shutdown_grace_ms;        /* how long SIGTERM waits for in-flight requests */
        char auth_token_file[CFG_PATH_MAX]; /* file holding the bearer token of mutating routes; "" = those routes off */
        int images_require_token;     /* GET /v1/images/{id} needs the bearer token too */
        int web_ui;                   /* serve the demo page at GET / */
        int max_connections;          /* open HTTP connections at most; more are closed at accept */
        int max_connections_per_client; /* open connections from one IP address at most; 0 = no limit */
        long max_buffered_bytes;      /* request body bytes held by all requests together (503 above) */
        long max_pixels_in_flight;    /* decoded image pixels held by all requests together (503 above) */
    } server;
    struct {
        int max_batch;      /* crops per batched forward pass */
        int max_delay_ms;   /* longest wait for a batch to fill after its first crop */
        int queue_capacity; /* crops waiting at most; more is answered 503 */
    } batching;
    struct {
        int device;    /* cfg_device */
        int gpu;       /* CUDA device ordinal */
        int precision; /* cfg_precision */
        int cpu_threads; /* 0 = all online cores */
        char coarse[CFG_PATH_MAX];          /* pconv_unet weights */
        char refine[CFG_PATH_MAX];          /* simk_unet weights used with a database (K >= 1) */
        char refine_fallback[CFG_PATH_MAX]; /* simk_unet weights with K = 0, used without a database */
        int telea_blend;                    /* apply the weights' telea_blend tables (1) or not (0) */
        char family[CFG_NAME_MAX];          /* the name of the family model.* and retrieval.* make */
        char router[CFG_PATH_MAX];          /* model=auto's router weights (core/route.h); "" = none */
    } model;
    struct {
        char database[CFG_PATH_MAX];           /* database directory; "" = none (Sim-0) */
        char descriptor[128];                  /* descriptor name, or "auto" = the one the database was built with */
        char descriptor_weights[CFG_PATH_MAX]; /* vgg16_features weights for a vgg16 descriptor; "" = none */
        int nprobe;                            /* IVF cells visited per query (approximate indexes only) */
    } retrieval;
    struct {
        int strategy;     /* cfg_strategy */
        int crop_margin;  /* pixels of context around each hole region (crop strategy) */
        int default_format; /* cfg_format */
        int jpeg_quality; /* JPEG quality of answers when the request gives none */
        int telea_threads; /* threads running method=telea requests (off the HTTP threads) */
        long max_work_pixels; /* working pixels (crops x working size^2) one request may send to the nets */
    } inpaint;
    struct {
        int level;  /* sp_log_level */
        int format; /* cfg_log_format */
    } logging;
    int nextra;                                 /* families of the `families` section */
    cfg_family extra[CFG_MAX_FAMILIES - 1];
} cfg_config;

/* Fills `c` with every key's default. */
void cfg_defaults(cfg_config *c);

/* Applies the YAML file `path` on top of `c`. Unknown sections or keys, values of the wrong type
 * or out of range, duplicate keys and malformed YAML fail with SP_ERR_INVALID or SP_ERR_FORMAT and
 * a message naming the file, the line, the key and the allowed values. */
sp_status cfg_load_file(cfg_config *c, const char *path);

/* Applies the environment overrides SEMIPAINT_<SECTION>_<KEY> (upper case) found in `envp`
 * (NULL-terminated "NAME=value" strings, e.g. `environ`) on top of `c`. A variable naming a
 * known section but an unknown key is an error; other SEMIPAINT_* variables are ignored. */
sp_status cfg_apply_env(cfg_config *c, char *const *envp);

/* The checks that involve several keys: server.max_pixels_in_flight >= server.max_image_pixels,
 * server.max_buffered_bytes >= server.max_body_bytes, server.images_require_token only with
 * a server.auth_token_file, and family names (model.family and the `families` section's) unique.
 * SP_ERR_INVALID naming the keys. */
sp_status cfg_check(const cfg_config *c);

/* Defaults, then the file (when `path` is not NULL), then the environment `envp` (may be NULL),
 * then cfg_check. */
sp_status cfg_load(cfg_config *c, const char *path, char *const *envp);

/* Sets one key from its text form, as the file and the environment do; `where` names the origin
 * for error messages ("semipaintd.yaml:12", "environment SEMIPAINT_X_Y"). In section "families"
 * the key is "NAME.KEY" (e.g. "general.coarse"); a new NAME adds a family with the defaults. */
sp_status cfg_set(cfg_config *c, const char *section, const char *key, const char *value, const char *where);

/* Every family of `c` in `out` (CFG_MAX_FAMILIES entries): first model.family's (model.* and
 * retrieval.*), then the `families` section's in the order given. Returns how many. */
int cfg_families(const cfg_config *c, cfg_family *out);

/* How configuration messages name key `key` (a cfg_family member: "coarse", "database", ...) of
 * family number `index` (cfg_families' order) called `name`: the first family's network keys are
 * "model.KEY" and its database keys (database, descriptor, descriptor_weights, nprobe)
 * "retrieval.KEY"; another family's are "families.NAME.KEY". Into `out` (cap bytes); returns out. */
const char *cfg_family_key(int index, const char *name, const char *key, char *out, size_t cap);

/* inpaint.strategy as the crop planner takes it. */
img_plan_strategy cfg_plan_strategy(const cfg_config *c);

/* Writes the whole configuration as YAML that cfg_load_file reads back to the same values. */
void cfg_print(const cfg_config *c, FILE *f);

/* Text name of an enum-typed key's value ("crop", "jpeg", ...); "?" for an unknown key. */
const char *cfg_enum_name(const char *section, const char *key, int value);

/* Splits server.listen into a host ("" = every interface) and a port. Returns SP_ERR_INVALID for
 * a malformed address. `host` receives at most hostcap-1 characters. */
sp_status cfg_parse_listen(const char *listen, char *host, size_t hostcap, int *port);

#endif
