/* test_config.c: semipaintd's configuration: defaults, YAML loading, every kind of error message, env overrides, print round trip. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "model/nn.h"
#include "tests/t.h"

static char tmpdir[] = "/tmp/test_config.XXXXXX";

/* Writes `text` to a file in the test's folder; returns its path (one of 64 static buffers, reused round robin). */
static const char *write_yaml(const char *name, const char *text) {
    static char paths[64][256];
    static int slot = 0;
    char *p = paths[slot++ % 64];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

/* Loads `text` and expects failure with every needle in the message. */
static void expect_error(const char *text, const char *n1, const char *n2, const char *n3) {
    cfg_config c;
    cfg_defaults(&c);
    cfg_config before = c;
    const char *path = write_yaml("bad.yaml", text);
    sp_status st = cfg_load_file(&c, path);
    const char *msg = sp_err_msg();
    CHECKF(st != SP_OK, "accepted: %s", text);
    CHECKF(strstr(msg, path) != NULL, "message lacks the file: %s", msg);
    if (n1) CHECKF(strstr(msg, n1) != NULL, "message lacks '%s': %s", n1, msg);
    if (n2) CHECKF(strstr(msg, n2) != NULL, "message lacks '%s': %s", n2, msg);
    if (n3) CHECKF(strstr(msg, n3) != NULL, "message lacks '%s': %s", n3, msg);
    CHECKF(memcmp(&c, &before, sizeof c) == 0, "a failed load changed the config: %s", text);
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 1;
    cfg_config c;
    cfg_defaults(&c);
    CHECK(!strcmp(c.server.listen, "0.0.0.0:8080"));
    CHECK(c.server.http_threads == 4);
    CHECK(c.server.max_body_bytes == 32L << 20);
    CHECK(c.batching.max_batch == 8 && c.batching.queue_capacity == 64);
    CHECK(c.model.device == CFG_DEVICE_AUTO && c.model.precision == CFG_PREC_FP32);
    CHECK(!strcmp(c.model.coarse, "weights/pconv.safetensors"));
    /* model.device and model.precision take the engine's names, in its order (nn_device_parse). */
    for (int i = 0; nn_device_names[i]; i++) {
        cfg_config d;
        cfg_defaults(&d);
        nn_device want;
        CHECK(nn_device_parse(nn_device_names[i], &want) == 0);
        CHECKF(cfg_set(&d, "model", "device", nn_device_names[i], "test") == SP_OK && d.model.device == (int)want,
               "%s", nn_device_names[i]);
        CHECK(!strcmp(cfg_enum_name("model", "device", d.model.device), nn_device_names[i]));
    }
    for (int i = 0; nn_precision_names[i]; i++) {
        cfg_config d;
        cfg_defaults(&d);
        CHECK(cfg_set(&d, "model", "precision", nn_precision_names[i], "test") == SP_OK && d.model.precision == i);
    }
    CHECK(c.retrieval.database[0] == 0 && !strcmp(c.retrieval.descriptor, "auto"));
    CHECK(c.inpaint.strategy == CFG_STRATEGY_CROP && c.inpaint.default_format == CFG_FORMAT_INPUT);
    CHECK(c.logging.level == SP_LOG_INFO && c.logging.format == CFG_LOG_JSON);
    CHECK(c.server.web_ui == 1);

    /* a good file */
    const char *good = write_yaml("good.yaml",
                                  "# comment\n"
                                  "server:\n"
                                  "  listen: \"127.0.0.1:9000\"\n"
                                  "  http_threads: 2\n"
                                  "  max_body_bytes: 8MiB\n"
                                  "  web_ui: off\n"
                                  "  auth_token_file:\n"
                                  "batching: {max_batch: 16, max_delay_ms: 0}\n"
                                  "model:\n"
                                  "  device: cpu\n"
                                  "  precision: tf32\n"
                                  "retrieval:\n"
                                  "  database: build/db\n"
                                  "inpaint:\n"
                                  "  strategy: resize\n"
                                  "  default_format: png\n"
                                  "logging:\n"
                                  "  format: text\n"
                                  "  level: debug\n");
    CHECKF(cfg_load_file(&c, good) == SP_OK, "%s", sp_err_msg());
    CHECK(!strcmp(c.server.listen, "127.0.0.1:9000"));
    CHECK(c.server.http_threads == 2);
    CHECK(c.server.max_body_bytes == 8L << 20);
    CHECK(c.server.web_ui == 0);
    CHECK(c.server.auth_token_file[0] == 0);
    CHECK(c.batching.max_batch == 16 && c.batching.max_delay_ms == 0);
    CHECK(c.model.device == CFG_DEVICE_CPU && c.model.precision == CFG_PREC_TF32);
    CHECK(!strcmp(c.retrieval.database, "build/db"));
    CHECK(c.inpaint.strategy == CFG_STRATEGY_RESIZE && c.inpaint.default_format == CFG_FORMAT_PNG);
    CHECK(c.logging.format == CFG_LOG_TEXT && c.logging.level == SP_LOG_DEBUG);
    CHECK(c.batching.queue_capacity == 64); /* untouched keys keep their defaults */

    /* empty and comment-only files are fine */
    cfg_defaults(&c);
    CHECK(cfg_load_file(&c, write_yaml("empty.yaml", "")) == SP_OK);
    CHECK(cfg_load_file(&c, write_yaml("comments.yaml", "# nothing\n")) == SP_OK);
    CHECK(cfg_load_file(&c, write_yaml("emptysec.yaml", "server:\n")) == SP_OK);

    /* errors: file, line, key, allowed values */
    expect_error("batching:\n  max_batch: 0\n", ":2:", "batching.max_batch", "1..256");
    expect_error("batching:\n  max_batch: lots\n", ":2:", "batching.max_batch", "'lots'");
    expect_error("server:\n  http_threads: 3.5\n", ":2:", "server.http_threads", "1..256");
    expect_error("batching:\n  max_bach: 4\n", ":2:", "max_bach", "max_batch, max_delay_ms, queue_capacity");
    expect_error("serverr:\n  listen: x\n", ":1:", "serverr", "allowed sections: server, batching");
    expect_error("model:\n  device: tpu\n", ":2:", "model.device", "auto, cpu, cuda");
    expect_error("inpaint:\n  strategy: tile\n", ":2:", "inpaint.strategy", "crop, resize");
    expect_error("logging:\n  format: xml\n", ":2:", "logging.format", "json, text");
    expect_error("server:\n  web_ui: maybe\n", ":2:", "server.web_ui", "true or false");
    expect_error("server:\n  listen: 8080\n", ":2:", "server.listen", "HOST:PORT");
    expect_error("server:\n  listen: \"1.2.3.4:70000\"\n", ":2:", "server.listen", "0..65535");
    expect_error("server:\n  max_body_bytes: 12QB\n", ":2:", "server.max_body_bytes", "suffixes");
    expect_error("server:\n  max_body_bytes: 100\n", ":2:", "server.max_body_bytes", "1024..");
    expect_error("server:\n  http_threads: [1, 2]\n", ":2:", "server.http_threads", "a list");
    expect_error("server:\n  http_threads: 2\n  http_threads: 3\n", ":3:", "given twice", NULL);
    expect_error("server: {}\nserver: {}\n", ":2:", "given twice", NULL);
    expect_error("server: 5\n", ":1:", "must be a mapping", "listen");
    expect_error("- a\n- b\n", ":1:", "expected a mapping", NULL);
    expect_error("server:\n  listen: \"abc\n", "malformed YAML", NULL, NULL);
    expect_error("server: &a {}\nbatching: *a\n", "aliases", NULL, NULL);
    expect_error("server: {}\n---\nserver: {}\n", "one YAML document", NULL, NULL);
    {
        char longv[2200];
        memset(longv, 'a', sizeof longv);
        memcpy(longv, "model:\n  coarse: ", 17);
        memcpy(longv + sizeof longv - 2, "\n", 2);
        expect_error(longv, ":2:", "model.coarse", "too long");
    }

    /* a missing file names itself */
    cfg_defaults(&c);
    CHECK(cfg_load_file(&c, "/nonexistent/semipaintd.yaml") != SP_OK);
    CHECK(strstr(sp_err_msg(), "/nonexistent/semipaintd.yaml") != NULL);

    /* environment overrides win over the file; unrelated SEMIPAINT_ variables are ignored */
    char *env_ok[] = {"SEMIPAINT_BATCHING_MAX_BATCH=3", "SEMIPAINT_SERVER_LISTEN=:0", "SEMIPAINT_DATA=/x",
                      "SEMIPAINT_INPAINT_STRATEGY=resize", "SEMIPAINT_MODEL_TELEA_BLEND=false", "HOME=/root",
                      NULL};
    CHECKF(cfg_load(&c, good, env_ok) == SP_OK, "%s", sp_err_msg());
    CHECK(c.batching.max_batch == 3);
    CHECK(c.model.telea_blend == 0);
    CHECK(!strcmp(c.server.listen, ":0"));
    CHECK(c.server.http_threads == 2);
    char *env_bad[] = {"SEMIPAINT_BATCHING_MAX_BACH=3", NULL};
    CHECK(cfg_load(&c, NULL, env_bad) != SP_OK);
    CHECKF(strstr(sp_err_msg(), "SEMIPAINT_BATCHING_MAX_BACH") && strstr(sp_err_msg(), "max_batch"), "%s",
           sp_err_msg());
    char *env_range[] = {"SEMIPAINT_INPAINT_JPEG_QUALITY=101", NULL};
    CHECK(cfg_load(&c, NULL, env_range) != SP_OK);
    CHECKF(strstr(sp_err_msg(), "inpaint.jpeg_quality") && strstr(sp_err_msg(), "1..100"), "%s", sp_err_msg());

    /* print, then load what was printed: the same configuration */
    CHECK(cfg_load(&c, good, env_ok) == SP_OK);
    char pr[256];
    snprintf(pr, sizeof pr, "%s/printed.yaml", tmpdir);
    FILE *f = fopen(pr, "w");
    cfg_print(&c, f);
    fclose(f);
    cfg_config back;
    cfg_defaults(&back);
    back.batching.max_batch = 99;
    CHECKF(cfg_load_file(&back, pr) == SP_OK, "%s", sp_err_msg());
    CHECK(memcmp(&back, &c, sizeof c) == 0);

    /* model families: the first from model.* and retrieval.*, more from `families` */
    cfg_family fams[CFG_MAX_FAMILIES];
    cfg_defaults(&c);
    CHECK(cfg_families(&c, fams) == 1 && !strcmp(fams[0].name, "faces") &&
          !strcmp(fams[0].coarse, "weights/pconv.safetensors") && fams[0].nprobe == 16);
    const char *fy = write_yaml("fam.yaml", "model:\n  family: celeb\nfamilies:\n  general:\n    coarse: g/p.st\n"
                                            "    refine_fallback: g/s0.st\n    telea_blend: false\n    nprobe: 4\n"
                                            "  street2: {coarse: s/p.st, database: ~}\n");
    CHECKF(cfg_load(&c, fy, NULL) == SP_OK, "%s", sp_err_msg());
    CHECK(cfg_families(&c, fams) == 3);
    CHECK(!strcmp(fams[0].name, "celeb") && !strcmp(fams[1].name, "general") && !strcmp(fams[2].name, "street2"));
    CHECK(!strcmp(fams[1].coarse, "g/p.st") && fams[1].telea_blend == 0 && fams[1].nprobe == 4 &&
          !strcmp(fams[1].descriptor, "auto") && fams[1].refine[0] == 0);
    CHECK(fams[2].telea_blend == 1 && fams[2].database[0] == 0);
    char kn[96];
    CHECK(!strcmp(cfg_family_key(0, "celeb", "coarse", kn, sizeof kn), "model.coarse"));
    CHECK(!strcmp(cfg_family_key(0, "celeb", "database", kn, sizeof kn), "retrieval.database"));
    CHECK(!strcmp(cfg_family_key(1, "general", "database", kn, sizeof kn), "families.general.database"));
    char *env_fam[] = {"SEMIPAINT_FAMILIES_GENERAL_DATABASE=build/dbg", "SEMIPAINT_FAMILIES_NEW1_COARSE=n.st", NULL};
    CHECKF(cfg_load(&c, fy, env_fam) == SP_OK, "%s", sp_err_msg());
    CHECK(cfg_families(&c, fams) == 4 && !strcmp(fams[1].database, "build/dbg") && !strcmp(fams[3].name, "new1") &&
          !strcmp(fams[3].coarse, "n.st"));
    snprintf(pr, sizeof pr, "%s/printed_fam.yaml", tmpdir);
    f = fopen(pr, "w");
    cfg_print(&c, f);
    fclose(f);
    cfg_defaults(&back);
    CHECKF(cfg_load_file(&back, pr) == SP_OK, "%s", sp_err_msg());
    CHECK(memcmp(&back, &c, sizeof c) == 0);
    expect_error("families:\n  general:\n    coarse: a\n  general:\n    coarse: b\n", "family general", "twice", NULL);
    expect_error("families:\n  general:\n    coarse: a\n    coarse: b\n", "coarse", "twice", NULL);
    expect_error("families:\n  General:\n    coarse: a\n", "General", "a-z", NULL);
    expect_error("families:\n  auto:\n    coarse: a\n", "auto", "not a family name", NULL);
    expect_error("families:\n  g:\n    coars: a\n", "coars", "refine_fallback", NULL);
    expect_error("families:\n  g:\n    nprobe: 0\n", "nprobe", "1..65536", NULL);
    expect_error("families:\n  g: 3\n", "family g", "mapping", NULL);
    expect_error("families:\n  a: {}\n  b: {}\n  c: {}\n  d: {}\n  e: {}\n  f: {}\n  g: {}\n  h: {}\n", "too many",
                 NULL, NULL);
    CHECK(cfg_load(&c, write_yaml("dup.yaml", "families:\n  faces:\n    coarse: a\n"), NULL) != SP_OK);
    CHECKF(strstr(sp_err_msg(), "families.faces") && strstr(sp_err_msg(), "model.family"), "%s", sp_err_msg());
    CHECK(cfg_load(&c, write_yaml("bad_fam.yaml", "model:\n  family: \"Bad Name\"\n"), NULL) != SP_OK);
    CHECKF(strstr(sp_err_msg(), "model.family"), "%s", sp_err_msg());
    char *env_fam_bad[] = {"SEMIPAINT_FAMILIES_GENERAL=x", NULL};
    CHECK(cfg_load(&c, NULL, env_fam_bad) != SP_OK);
    CHECKF(strstr(sp_err_msg(), "SEMIPAINT_FAMILIES_<NAME>_<KEY>"), "%s", sp_err_msg());

    /* listen parsing */
    char host[64];
    int port;
    CHECK(cfg_parse_listen("127.0.0.1:8080", host, sizeof host, &port) == SP_OK && !strcmp(host, "127.0.0.1") &&
          port == 8080);
    CHECK(cfg_parse_listen(":80", host, sizeof host, &port) == SP_OK && host[0] == 0 && port == 80);
    CHECK(cfg_parse_listen("[::1]:81", host, sizeof host, &port) == SP_OK && !strcmp(host, "::1") && port == 81);
    CHECK(cfg_parse_listen("::1:81", host, sizeof host, &port) != SP_OK);
    CHECK(cfg_parse_listen("host:", host, sizeof host, &port) != SP_OK);
    CHECK(!strcmp(cfg_enum_name("inpaint", "strategy", CFG_STRATEGY_RESIZE), "resize"));

    /* the example configuration shipped in config/ loads */
    if (t_exists("config/semipaintd.yaml")) {
        cfg_defaults(&c);
        CHECKF(cfg_load_file(&c, "config/semipaintd.yaml") == SP_OK, "%s", sp_err_msg());
        CHECK(!strcmp(c.model.refine_fallback, "weights/sim0.safetensors"));
        CHECK(c.model.telea_blend == 1);
    }
    cfg_defaults(&c);
    CHECK(c.model.telea_blend == 1);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return t_done("test_config");
}
