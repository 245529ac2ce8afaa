/* test_metrics.c: the Prometheus registry: counters, gauges, histogram buckets, label escaping, process gauges, concurrent updates. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "tests/t.h"

static core_family *hits;

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 10000; i++) core_metric_add(hits, (const char *[]){i % 2 ? "odd" : "even"}, 1);
    return NULL;
}

int main(void) {
    core_metrics *m = core_metrics_new();
    core_family *req = core_metrics_counter(m, "x_requests_total", "Requests.", "route,code");
    core_family *q = core_metrics_gauge(m, "x_queue_depth", "Queue depth.", NULL);
    const double b[] = {0.1, 1, 10};
    core_family *h = core_metrics_histogram(m, "x_seconds", "Durations.", "stage", b, 3);
    CHECK(req && q && h);
    CHECK(core_metrics_histogram(m, "bad", "bad", NULL, (const double[]){1, 1}, 2) == NULL);
    core_metric_add(req, (const char *[]){"/v1/inpaint", "200"}, 1);
    core_metric_add(req, (const char *[]){"/v1/inpaint", "200"}, 2);
    core_metric_add(req, (const char *[]){"/a\"b\\c\nd", "404"}, 1);
    core_metric_set(q, NULL, 7);
    core_metric_observe(h, (const char *[]){"coarse"}, 0.05);
    core_metric_observe(h, (const char *[]){"coarse"}, 0.1);
    core_metric_observe(h, (const char *[]){"coarse"}, 5);
    core_metric_observe(h, (const char *[]){"coarse"}, 100);
    CHECK(core_metric_get(req, (const char *[]){"/v1/inpaint", "200"}) == 3);
    CHECK(core_metric_get(h, (const char *[]){"coarse"}) == 4);
    core_metrics_add_process(m);
    size_t len;
    char *text = core_metrics_render(m, &len);
    CHECK(text && strlen(text) == len);
    CHECK(strstr(text, "# TYPE x_requests_total counter\n"));
    CHECK(strstr(text, "x_requests_total{route=\"/v1/inpaint\",code=\"200\"} 3\n"));
    CHECK(strstr(text, "x_requests_total{route=\"/a\\\"b\\\\c\\nd\",code=\"404\"} 1\n"));
    CHECK(strstr(text, "x_queue_depth 7\n"));
    CHECK(strstr(text, "x_seconds_bucket{stage=\"coarse\",le=\"0.1\"} 2\n"));
    CHECK(strstr(text, "x_seconds_bucket{stage=\"coarse\",le=\"1\"} 2\n"));
    CHECK(strstr(text, "x_seconds_bucket{stage=\"coarse\",le=\"10\"} 3\n"));
    CHECK(strstr(text, "x_seconds_bucket{stage=\"coarse\",le=\"+Inf\"} 4\n"));
    CHECK(strstr(text, "x_seconds_sum{stage=\"coarse\"} 105.15\n"));
    CHECK(strstr(text, "x_seconds_count{stage=\"coarse\"} 4\n"));
    CHECK(strstr(text, "process_resident_memory_bytes "));
    CHECK(strstr(text, "# TYPE process_cpu_seconds_total counter"));
    CHECK(strstr(text, "process_open_fds "));
    const char *st = strstr(text, "\nprocess_start_time_seconds ");
    CHECK(st && atof(st + 28) > 1.5e9);
    const char *rss = strstr(text, "\nprocess_resident_memory_bytes ");
    CHECK(rss && atof(rss + 31) > 1e5);
    free(text);

    hits = core_metrics_counter(m, "x_hits_total", "Hits.", "parity");
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK(core_metric_get(hits, (const char *[]){"odd"}) == 20000 && core_metric_get(hits, (const char *[]){"even"}) == 20000);
    core_metrics_free(m);
    core_metrics_free(NULL);
    return t_done("test_metrics");
}
