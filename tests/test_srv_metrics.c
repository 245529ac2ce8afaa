/* test_srv_metrics.c: the Prometheus registry: counters, gauges, histogram buckets, label escaping, process gauges, concurrent updates. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "srv_metrics.h"
#include "t.h"

static srv_family *hits;

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 10000; i++) srv_metric_add(hits, (const char *[]){i % 2 ? "odd" : "even"}, 1);
    return NULL;
}

int main(void) {
    srv_metrics *m = srv_metrics_new();
    srv_family *req = srv_metrics_counter(m, "x_requests_total", "Requests.", "route,code");
    srv_family *q = srv_metrics_gauge(m, "x_queue_depth", "Queue depth.", NULL);
    const double b[] = {0.1, 1, 10};
    srv_family *h = srv_metrics_histogram(m, "x_seconds", "Durations.", "stage", b, 3);
    CHECK(req && q && h);
    CHECK(srv_metrics_histogram(m, "bad", "bad", NULL, (const double[]){1, 1}, 2) == NULL);
    srv_metric_add(req, (const char *[]){"/v1/inpaint", "200"}, 1);
    srv_metric_add(req, (const char *[]){"/v1/inpaint", "200"}, 2);
    srv_metric_add(req, (const char *[]){"/a\"b\\c\nd", "404"}, 1);
    srv_metric_set(q, NULL, 7);
    srv_metric_observe(h, (const char *[]){"coarse"}, 0.05);
    srv_metric_observe(h, (const char *[]){"coarse"}, 0.1);
    srv_metric_observe(h, (const char *[]){"coarse"}, 5);
    srv_metric_observe(h, (const char *[]){"coarse"}, 100);
    CHECK(srv_metric_get(req, (const char *[]){"/v1/inpaint", "200"}) == 3);
    CHECK(srv_metric_get(h, (const char *[]){"coarse"}) == 4);
    srv_metrics_add_process(m);
    size_t len;
    char *text = srv_metrics_render(m, &len);
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

    hits = srv_metrics_counter(m, "x_hits_total", "Hits.", "parity");
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK(srv_metric_get(hits, (const char *[]){"odd"}) == 20000 && srv_metric_get(hits, (const char *[]){"even"}) == 20000);
    srv_metrics_free(m);
    srv_metrics_free(NULL);
    return t_done("test_srv_metrics");
}
