/* semipaintd_main.c: entry point of the semipaintd daemon: arguments, configuration, signals (SIGTERM drains, SIGHUP reloads). */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "server/srv.h"

extern char **environ;

static void usage(FILE *f) {
    fprintf(f,
            "usage: semipaintd [-c FILE] [--check-config] [--print-config]\n"
            "\n"
            "Serves semi-parametric image inpainting over HTTP (see /openapi.yaml once running).\n"
            "  -c, --config FILE  YAML configuration (every key optional; see config/semipaintd.yaml)\n"
            "  --check-config     validate the configuration and the files it names, then exit\n"
            "  --print-config     print the effective configuration (defaults, file, environment) and exit\n"
            "  --version          print the version\n"
            "Environment: SEMIPAINT_<SECTION>_<KEY>=value overrides a key, e.g. SEMIPAINT_SERVER_LISTEN=:9000.\n"
            "Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the database.\n");
}

static int sig_pipe[2] = {-1, -1};

/* Async-signal-safe: hands the signal's number to the main loop. */
static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(sig_pipe[1], &b, 1) < 0) { /* the pipe is full: a signal is already waiting */
    }
    errno = saved;
}

typedef struct {
    srv_server *srv;
    sp_status st;
} loader;

static void *load_main(void *arg) {
    loader *l = arg;
    l->st = srv_server_load(l->srv);
    if (l->st) {
        SP_ERROR("startup failed: %s", sp_err_msg());
        kill(getpid(), SIGTERM); /* let the signal loop stop the daemon */
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int check = 0, print = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--check-config")) check = 1;
        else if (!strcmp(argv[i], "--print-config")) print = 1;
        else if (!strcmp(argv[i], "--version")) {
            printf("semipaintd %s\n", SP_VERSION);
            return 0;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "semipaintd: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    cfg_config cfg;
    if (cfg_load(&cfg, path, environ)) {
        fprintf(stderr, "semipaintd: configuration error: %s\n", sp_err_msg());
        return 1;
    }
    if (print) {
        cfg_print(&cfg, stdout);
        return 0;
    }
    if (check) {
        if (srv_check_files(&cfg)) {
            fprintf(stderr, "semipaintd: configuration error: %s\n", sp_err_msg());
            return 1;
        }
        printf("semipaintd: configuration %s is valid\n", path ? path : "(defaults)");
        return 0;
    }
    sp_log_configure((sp_log_level)cfg.logging.level, cfg.logging.format == CFG_LOG_JSON);
    /* Resident memory stays flat under load. A request's buffers (body, decoded image, crops,
     * encoded answer: about 2 MiB for a 256x256 request) are short-lived and their number is
     * bounded by admission (srv_server_new), so the heaps keep them for the next request instead
     * of unmapping and faulting them in again: mmap only above 4 MiB (large images, which go back
     * to the system when freed), never trim below 256 MiB, and a few arenas for the HTTP threads
     * and the executor (glibc's default of 8 per core would each keep their own free memory). */
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_ARENA_MAX, 4);

    /* The signals go through a pipe that the loop below reads. A handler, not only a blocked mask
     * and sigwait: threads that libraries start before main (OpenBLAS's) do not inherit the mask,
     * and a signal delivered to one of them would otherwise take its default action and kill the
     * process without a drain. Threads started from here on block them. */
    if (pipe2(sig_pipe, O_CLOEXEC)) {
        SP_ERROR("cannot start: pipe: %s", strerror(errno));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_server *srv;
    if (srv_server_new(&cfg, &srv)) {
        SP_ERROR("cannot start: %s", sp_err_msg());
        return 1;
    }
    SP_INFO("semipaintd %s listening on %s (port %d); loading models", SP_VERSION, cfg.server.listen,
            srv_server_port(srv));
    loader l = {srv, SP_OK};
    pthread_t lt;
    if (pthread_create(&lt, NULL, load_main, &l)) {
        SP_ERROR("cannot start the loader thread");
        srv_server_free(srv);
        return 1;
    }
    /* this thread takes the signals from here on (the others keep them blocked) */
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    int sig = 0;
    for (;;) {
        unsigned char b;
        ssize_t got = read(sig_pipe[0], &b, 1);
        if (got != 1) continue; /* EINTR */
        sig = b;
        if (sig == SIGHUP) {
            SP_INFO("SIGHUP: reloading the database");
            srv_server_reload(srv);
            continue;
        }
        SP_INFO("%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    pthread_join(lt, NULL);
    srv_server_shutdown(srv); /* logs how many requests, if any, the grace period cut short */
    srv_server_free(srv);
    return l.st ? 1 : 0;
}
