/* cmd_weights.c: `semipaint weights info FILE`: architecture, tensor shapes, parameter count and sha256 of a weights file. */
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "model/nn.h"
#include "model/st.h"

static void print_ints(const char *label, const int *v, int n) {
    printf("%-14s", label);
    for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", v[i]);
    printf("\n");
}

static int info(const char *path) {
    nn_backend *be = NULL;
    nn_net *net = NULL;
    st_file *f = NULL;
    nn_backend_opts o = {.device = NN_DEVICE_CPU, .threads = 1};
    sp_status st = nn_backend_opts_from_env(&o, environ);
    if (!st) st = nn_backend_new(&o, &be);
    if (!st) st = nn_net_load(be, path, &net);
    if (!st) st = st_open(path, &f);
    if (st) {
        fprintf(stderr, "semipaint weights info: %s\n", sp_err_msg());
        st_close(f);
        nn_net_free(net);
        nn_backend_free(be);
        return 1;
    }
    const nn_net_info *in = nn_net_get_info(net);
    printf("%-14s%s\n", "file", path);
    printf("%-14s%s\n", "arch", in->arch_name);
    printf("%-14s%d\n", "size", in->size);
    if (in->arch == NN_ARCH_VGG16) {
        print_ints("block widths", in->enc_channels, 5);
    } else {
        printf("%-14s%d\n", "levels", in->levels);
        print_ints("enc kernels", in->enc_kernels, in->levels);
        print_ints("enc channels", in->enc_channels, in->levels);
    }
    printf("%-14s%d\n", "in channels", in->in_channels);
    printf("%-14s%d\n", "out channels", in->out_channels);
    if (in->k >= 0) printf("%-14s%d\n", "k", in->k);
    printf("%-14s%ld (%.2f M)\n", "parameters", in->params, in->params / 1e6);
    printf("%-14s%.2f per %dx%d image\n", "GFLOP", nn_net_flops(net, in->size, in->size) / 1e9, in->size, in->size);
    printf("%-14s%s\n", "sha256", in->sha256);
    if (in->blend_n) {
        printf("%-14s", "telea blend");
        for (int i = 0; i < in->blend_n; i++) printf("%s%.3g", i ? "," : "", in->blend[i]);
        printf(" (share of Telea by distance 1..%d px)\n", in->blend_n);
    }
    if (in->iblend_n) {
        printf("%-14s", "image blend");
        for (int i = 0; i < in->iblend_n; i++) printf("%s%.3g", i ? "," : "", in->iblend[i]);
        printf(" (share of Telea by distance 1..%d image px)\n", in->iblend_n);
    }
    if (in->trained_on[0]) printf("%-14s%s\n", "trained on", in->trained_on);
    if (in->licence[0]) printf("%-14s%s\n", "licence", in->licence);
    if (in->notes[0]) printf("%-14s%s\n", "notes", in->notes);
    printf("tensors (%d):\n", st_count(f));
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        printf("  %-24s %-5s [", t->name, st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
        printf("]\n");
    }
    st_close(f);
    nn_net_free(net);
    nn_backend_free(be);
    return 0;
}

static void weights_usage(FILE *f) { fprintf(f, "usage: semipaint weights info FILE\n"); }

int cmd_weights(int argc, char **argv) {
    const cli_spec spec = {"semipaint weights", NULL, 0, 2, 2, weights_usage};
    const char *pos[2];
    int npos, rc = cli_parse(&spec, argc, argv, NULL, pos, &npos);
    if (rc >= 0) return rc;
    if (strcmp(pos[0], "info")) {
        fprintf(stderr, "semipaint weights: unknown subcommand '%s'\n\n", pos[0]);
        weights_usage(stderr);
        return 2;
    }
    return info(pos[1]);
}
