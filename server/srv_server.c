/* srv_server.c: semipaintd's lifecycle (server/srv.h): start (token, metrics, pools, the listening address, libmicrohttpd), load, reload, drain, free; the file checks of --check-config. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/srv_http_int.h"

/* ---- lifecycle ---- */

/* Before each scrape: the gauges read from the engine and the executor, once they exist. */
static void render_hook(void *ctx) {
    srv_server *s = ctx;
    if (atomic_load(&s->state) == ST_READY || atomic_load(&s->state) == ST_DRAINING) {
        for (int i = 0; i < core_engine_nfamilies(s->engine); i++)
            core_metric_set(s->m_index, (const char *[]){core_engine_family_name(s->engine, i)},
                            (double)core_engine_db_count(s->engine, i));
        core_metric_set(s->m_depth, NULL, s->exec ? core_exec_queue_depth(s->exec) : 0);
        if (s->m_gpu) core_metric_set(s->m_gpu, NULL, (double)core_engine_device_memory(s->engine));
    }
}

/* Reads the bearer token of server.auth_token_file `path` into `out` (cap bytes): its mode must
 * keep it from other users, and the token, blanks around it trimmed, must hold 16 to cap-1
 * printable characters. Errors name the key and the path. */
static sp_status read_token(const char *path, char *out, size_t cap) {
    struct stat sb;
    if (stat(path, &sb)) return sp_err(SP_ERR_IO, "server.auth_token_file: %s: %s", path, strerror(errno));
    /* others may neither read nor write it, nor its group write it (a group read is how a
     * Kubernetes secret volume with fsGroup reaches a non-root user: defaultMode 0440) */
    if (sb.st_mode & (S_IRWXO | S_IWGRP))
        return sp_err(SP_ERR_INVALID,
                      "server.auth_token_file: %s has mode %04o: %s; refused (chmod 600 %s)", path,
                      (unsigned)(sb.st_mode & 07777),
                      sb.st_mode & S_IRWXO ? "any user of the machine may read or change the token"
                                           : "its group may change the token",
                      path);
    uint8_t *buf;
    size_t len;
    sp_status st = sp_read_file(path, &buf, &len);
    if (st) return sp_err_wrap(st, "server.auth_token_file");
    while (len && isspace(buf[len - 1])) len--;
    size_t i = 0;
    while (i < len && isspace(buf[i])) i++;
    sp_status res = SP_OK;
    if (len - i < 16) res = sp_err(SP_ERR_INVALID, "server.auth_token_file: %s holds a token of %zu characters; use at least 16", path, len - i);
    else if (len - i >= cap) res = sp_err(SP_ERR_INVALID, "server.auth_token_file: %s: token longer than %zu characters", path, cap - 1);
    else {
        for (size_t j = i; j < len && !res; j++)
            if (!isgraph(buf[j])) res = sp_err(SP_ERR_INVALID, "server.auth_token_file: %s: the token holds a blank or control character", path);
        if (!res) {
            memcpy(out, buf + i, len - i);
            out[len - i] = 0;
        }
    }
    free(buf);
    return res;
}

/* Registers the server's metric families (docs/metrics.md) and their starting values; the
 * gauges read at each scrape are set by render_hook. SP_ERR_NOMEM. */
static sp_status register_metrics(srv_server *s) {
    s->metrics = core_metrics_new();
    if (!s->metrics) return sp_err(SP_ERR_NOMEM, "server: out of memory");
    const double batch_buckets[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256};
    s->m_requests = core_metrics_counter(s->metrics, "semipaint_http_requests_total", "HTTP requests answered, by route and status code.", "route,code");
    s->m_duration = core_metrics_histogram(s->metrics, "semipaint_http_request_duration_seconds", "Time from a request's headers to its completion.", "route", core_duration_buckets, core_duration_nbuckets);
    s->m_stage = core_metrics_histogram(s->metrics, "semipaint_stage_duration_seconds", "Time of each pipeline stage: decode and encode per request, queue per crop, coarse, descriptor, search and refine per batch.", "stage", core_duration_buckets, core_duration_nbuckets);
    s->m_batch = core_metrics_histogram(s->metrics, "semipaint_batch_size", "Crops per batched forward pass.", NULL, batch_buckets, sizeof batch_buckets / sizeof batch_buckets[0]);
    s->m_depth = core_metrics_gauge(s->metrics, "semipaint_queue_depth", "Crops waiting for the executor.", NULL);
    s->m_inflight = core_metrics_gauge(s->metrics, "semipaint_inflight_requests", "Requests being received, processed or answered.", NULL);
    s->m_rejected = core_metrics_counter(s->metrics, "semipaint_rejected_total", "Requests refused or dropped by load shedding, by reason.", "reason");
    s->m_index = core_metrics_gauge(s->metrics, "semipaint_index_images", "Images in each model family's retrieval database.", "model");
    s->m_inpaint = core_metrics_counter(s->metrics, "semipaint_inpaint_total", "Inpainting answers by the model family that served them, the method that ran (sim, coarse, telea) and how the family was chosen (auto, named).", "model,method,requested");
    s->m_build = core_metrics_gauge(s->metrics, "semipaint_build_info", "Version and compute backend of this server.", "version,backend");
    core_metrics_add_process(s->metrics);
    core_metrics_on_render(s->metrics, render_hook, s);
    core_metric_set(s->m_inflight, NULL, 0);
    core_metric_set(s->m_depth, NULL, 0);
    const char *reasons[] = {"queue_full", "overload", "inflight", "deadline",  "shutdown",    "not_ready",
                             "draining",   "pixels",   "buffered", "slow_body", "telea_queue"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        core_metric_add(s->m_rejected, (const char *[]){reasons[i]}, 0);
    return SP_OK;
}

/* The socket address of server.listen `listen` (HOST:PORT or [IPV6]:PORT, cfg_parse_listen; an
 * empty host, * or 0.0.0.0 is every IPv4 interface, localhost the loopback, and no other name is
 * resolved) into *ss and *port, adding MHD_USE_IPv6 to *flags for an IPv6 address. SP_ERR_INVALID
 * naming the key. */
static sp_status listen_address(const char *listen, struct sockaddr_storage *ss, int *port, unsigned *flags) {
    char host[256];
    sp_status st = cfg_parse_listen(listen, host, sizeof host, port);
    if (st) return st;
    memset(ss, 0, sizeof *ss);
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)*port);
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            return sp_err(SP_ERR_INVALID, "server.listen: '%s' is not an IPv6 address", host);
        *flags |= MHD_USE_IPv6;
        return SP_OK;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)*port);
    if (!host[0] || !strcmp(host, "0.0.0.0")) a4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (!strcmp(host, "localhost")) a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return sp_err(SP_ERR_INVALID, "server.listen: '%s' is not an IPv4 address (names other than localhost are not resolved)", host);
    return SP_OK;
}

sp_status srv_server_new(const cfg_config *cfg, srv_server **out) {
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return sp_err(SP_ERR_NOMEM, "server: out of memory");
    s->cfg = *cfg;
    s->started = sp_now();
    pthread_mutex_init(&s->reload_mu, NULL);
    unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)(sp_wall() * 1e6);
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) seed ^= 0x9e3779b9u;
        close(fd);
    }
    s->id_prefix = seed;
    /* Admission bound of inpainting requests in flight: what the queue holds, one running batch,
     * and two per HTTP thread being decoded or encoded. The executor's checks alone only see the
     * queue: when the HTTP threads fall behind (bodies, decoding and encoding share the CPU with
     * the model), requests would otherwise pile up receiving their bodies, all slowed alike, with
     * latencies far past their deadline measured from the client. */
    s->max_admitted = cfg->batching.queue_capacity + cfg->batching.max_batch + 2 * cfg->server.http_threads;
    sp_status st = SP_OK;
    if (cfg->server.auth_token_file[0] && (st = read_token(cfg->server.auth_token_file, s->token, sizeof s->token)))
        goto fail;
    if ((st = register_metrics(s))) goto fail;
    /* Telea's queue: as many as its workers can start on within a request's deadline, roughly */
    if ((st = core_pool_new(cfg->inpaint.telea_threads, 4 * cfg->inpaint.telea_threads + 4, &s->telea))) goto fail;
    /* every admitted request can wait in the work pool's queue: it never refuses one of them */
    if ((st = core_pool_new(cfg->server.work_threads, s->max_admitted + 16, &s->work))) goto fail;
    struct sockaddr_storage ss;
    int port;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES) flags |= MHD_USE_EPOLL;
    if ((st = listen_address(cfg->server.listen, &ss, &port, &flags))) goto fail;
    unsigned timeout_s = (unsigned)((cfg->server.request_timeout_ms + 999) / 1000);
    struct MHD_OptionItem opts[] = {
        /* first, so that libmicrohttpd's messages about the options below reach the JSON log too */
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)srv_mhd_log, NULL},
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)timeout_s, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)srv_on_completed, s},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)(64 * 1024), NULL},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->server.max_connections, NULL},
        {cfg->server.max_connections_per_client ? MHD_OPTION_PER_IP_CONNECTION_LIMIT : MHD_OPTION_LISTEN_BACKLOG_SIZE,
         cfg->server.max_connections_per_client ? (intptr_t)cfg->server.max_connections_per_client : 1024, NULL},
        {cfg->server.http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         (intptr_t)cfg->server.http_threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, srv_on_request, s, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->mhd) {
        st = sp_err(SP_ERR_IO, "server.listen: cannot listen on %s (address in use, or not permitted?)", cfg->server.listen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : port;
    *out = s;
    return SP_OK;
fail:
    srv_server_free(s);
    return st;
}

int srv_server_port(const srv_server *s) { return s->port; }

sp_status srv_server_load(srv_server *s) {
    double t0 = sp_now();
    sp_status st = core_engine_new(&s->cfg, &s->engine);
    if (st) goto fail;
    core_exec_metrics em = {s->m_batch, s->m_stage, s->m_depth, s->m_rejected};
    core_runner runner = core_engine_runner(s->engine);
    if ((st = core_exec_new(&runner, s->cfg.batching.max_batch, s->cfg.batching.max_delay_ms,
                           s->cfg.batching.queue_capacity, &em, &s->exec)))
        goto fail;
    core_metric_set(s->m_build, (const char *[]){SP_VERSION, core_engine_backend(s->engine)}, 1);
    if (core_engine_backend_has(s->engine, NN_CAP_DEVICE_MEMORY))
        s->m_gpu = core_metrics_gauge(s->metrics, "semipaint_gpu_memory_used_bytes", "Device memory held by the backend.", NULL);
    for (int i = 0; i < core_engine_nfamilies(s->engine); i++) {
        const char *name = core_engine_family_name(s->engine, i);
        core_metric_set(s->m_index, (const char *[]){name}, (double)core_engine_db_count(s->engine, i));
        SP_INFO("model family %s: working size %d, %s", name, core_engine_size(s->engine, i),
                core_engine_k(s->engine, i) ? "Sim-K with a database" : "Sim-0 (no database configured)");
    }
    atomic_store(&s->state, ST_READY);
    SP_INFO("ready in %.1f s: %d model famil%s, %s backend", sp_now() - t0, core_engine_nfamilies(s->engine),
            core_engine_nfamilies(s->engine) == 1 ? "y" : "ies", core_engine_backend(s->engine));
    return SP_OK;
fail:
    snprintf(s->load_error, sizeof s->load_error, "%s", sp_err_msg());
    atomic_store(&s->state, ST_FAILED);
    return st;
}

sp_status srv_server_reload(srv_server *s) {
    if (atomic_load(&s->state) != ST_READY) return sp_err(SP_ERR_BUSY, "the server is not ready; reload refused");
    if (pthread_mutex_trylock(&s->reload_mu)) return sp_err(SP_ERR_BUSY, "a reload is already running");
    double t0 = sp_now();
    sp_status st = core_engine_reload(s->engine);
    if (st) SP_ERROR("database reload failed, the previous one stays in service: %s", sp_err_msg());
    else {
        long n = 0;
        for (int i = 0; i < core_engine_nfamilies(s->engine); i++) {
            long c = core_engine_db_count(s->engine, i);
            core_metric_set(s->m_index, (const char *[]){core_engine_family_name(s->engine, i)}, (double)c);
            n += c;
        }
        SP_INFO("database reloaded in %.0f ms: %ld images (every family)", (sp_now() - t0) * 1e3, n);
    }
    pthread_mutex_unlock(&s->reload_mu);
    return st;
}

int srv_server_shutdown(srv_server *s) {
    if (!s->mhd) return 0;
    double t0 = sp_now(), grace = s->cfg.server.shutdown_grace_ms / 1e3;
    atomic_store(&s->state, ST_DRAINING);
    MHD_socket ls = MHD_quiesce_daemon(s->mhd);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    SP_INFO("draining: %d requests in flight, %.1f s of grace", atomic_load(&s->inflight), grace);
    while (atomic_load(&s->inflight) > 0 && sp_now() - t0 < grace) usleep(10000);
    int cut = atomic_load(&s->inflight);
    /* What is left is answered 503: the work pool stops first (its queued stages are cancelled,
     * later hand-offs to it refused), then the executor and Telea's workers, whose requests then
     * go back to their HTTP threads with the refusal. Give the answers a moment to go out. */
    core_pool_stop(s->work);
    core_exec_stop(s->exec); /* stopped, not freed: HTTP threads may still ask it (refused) */
    core_pool_stop(s->telea);
    double t1 = sp_now();
    while (atomic_load(&s->inflight) > 0 && sp_now() - t1 < 1.0) usleep(10000);
    /* a reload still opening the database holds a suspended request: let it finish first */
    while (atomic_load(&s->reload_threads) > 0) usleep(10000);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    SP_INFO("stopped after %.2f s of draining; %d requests cut short", sp_now() - t0, cut);
    return cut;
}

void srv_server_free(srv_server *s) {
    if (!s) return;
    /* cancelled stages resume their connections: before the daemon stops (see shutdown) */
    core_pool_stop(s->work);
    core_exec_stop(s->exec);
    core_pool_stop(s->telea);
    if (s->mhd) MHD_stop_daemon(s->mhd);
    core_exec_free(s->exec); /* no HTTP thread is left to look at it */
    core_pool_free(s->work);
    core_pool_free(s->telea);
    core_engine_free(s->engine);
    core_metrics_free(s->metrics);
    pthread_mutex_destroy(&s->reload_mu);
    free(s);
}

/* ---- --check-config ---- */

static sp_status check_readable(const char *key, const char *path, int dir) {
    struct stat st;
    if (stat(path, &st)) return sp_err(SP_ERR_IO, "%s: %s: %s", key, path, strerror(errno));
    if (dir && !S_ISDIR(st.st_mode)) return sp_err(SP_ERR_INVALID, "%s: %s is not a directory", key, path);
    if (!dir && !S_ISREG(st.st_mode)) return sp_err(SP_ERR_INVALID, "%s: %s is not a regular file", key, path);
    if (access(path, R_OK)) return sp_err(SP_ERR_IO, "%s: %s: %s", key, path, strerror(errno));
    return SP_OK;
}

sp_status srv_check_files(const cfg_config *cfg) {
    sp_status st;
    cfg_family fams[CFG_MAX_FAMILIES];
    const int n = cfg_families(cfg, fams);
    for (int i = 0; i < n; i++) { /* each family's files, named by its keys */
        const cfg_family *f = &fams[i];
        char k[96];
#define KEY(key_) cfg_family_key(i, f->name, key_, k, sizeof k)
        const int with_db = f->database[0] != 0;
        if ((st = check_readable(KEY("coarse"), f->coarse, 0))) return st;
        if (with_db && ((st = check_readable(KEY("refine"), f->refine, 0)) ||
                        (st = check_readable(KEY("database"), f->database, 1))))
            return st;
        if (!with_db && (st = check_readable(KEY("refine_fallback"), f->refine_fallback, 0))) return st;
        if (f->descriptor_weights[0] && (st = check_readable(KEY("descriptor_weights"), f->descriptor_weights, 0)))
            return st;
#undef KEY
    }
    if (cfg->model.router[0] && (st = check_readable("model.router", cfg->model.router, 0))) return st;
    if (cfg->server.auth_token_file[0]) {
        char tok[512];
        if ((st = read_token(cfg->server.auth_token_file, tok, sizeof tok))) return st;
    }
    return SP_OK;
}
