/* net.c: builds pconv_unet, simk_unet and vgg16_features from a weights file's metadata and runs them on a backend. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "model/st.h"

#define NN_PLAN_CACHE 6
#define VGG_CONVS 13
static const int vgg_block_convs[5] = {2, 2, 3, 3, 3};
static const int vgg_conv_index[VGG_CONVS] = {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28};
static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};

/* Activation memory for one batch size and image size, allocated once and reused. Any slot may
 * be empty (data NULL): plan_drop frees whatever is held, so a plan that failed halfway through
 * allocation is released whole. */
typedef struct {
    int n, h, w;
    unsigned long used;
    nn_tensor t[2 + 3 * NN_MAX_LEVELS + VGG_CONVS + 4];
    nn_mask m[2 + 3 * NN_MAX_LEVELS];
} nn_plan;

struct nn_net {
    nn_backend *be;
    nn_net_info info;
    int nl;            /* layers: UNet enc then dec (2L), VGG 13 convs */
    nn_layer *layers;
    nn_plan plans[NN_PLAN_CACHE];
    unsigned long clock;
};

const nn_net_info *nn_net_get_info(const nn_net *net) { return &net->info; }

int nn_pool_parse(const char *s) {
    if (!strcmp(s, "avg")) return NN_POOL_AVG;
    if (!strcmp(s, "max")) return NN_POOL_MAX;
    return -1;
}

const char *nn_pool_name(nn_pool p) { return p == NN_POOL_MAX ? "max" : "avg"; }

static void plan_drop(nn_net *net, nn_plan *p) {
    for (size_t i = 0; i < sizeof p->t / sizeof p->t[0]; i++) nn_tensor_drop(net->be, &p->t[i]);
    for (size_t i = 0; i < sizeof p->m / sizeof p->m[0]; i++) nn_mask_drop(net->be, &p->m[i]);
    memset(p, 0, sizeof *p);
}

void nn_net_free(nn_net *net) {
    if (!net) return;
    for (int i = 0; i < NN_PLAN_CACHE; i++) plan_drop(net, &net->plans[i]);
    for (int i = 0; i < net->nl; i++) {
        net->be->ops->layer_release(net->be, &net->layers[i]);
        free(net->layers[i].w);
        free(net->layers[i].b);
    }
    free(net->layers);
    free(net);
}

/* ---- metadata ---- */

static sp_status meta_int_array(const char *path, const cJSON *o, const char *key, int *out, int max, int *count) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a)) return sp_err(SP_ERR_FORMAT, "%s: metadata key '%s' missing or not an array", path, key);
    int n = cJSON_GetArraySize(a);
    if (n < 1 || n > max) return sp_err(SP_ERR_FORMAT, "%s: metadata '%s' has %d entries (1..%d allowed)", path, key, n, max);
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65536 || v->valuedouble != (int)v->valuedouble)
            return sp_err(SP_ERR_FORMAT, "%s: metadata '%s'[%d] is not a positive integer", path, key, i);
        out[i] = (int)v->valuedouble;
    }
    *count = n;
    return SP_OK;
}

static sp_status meta_int(const char *path, const cJSON *o, const char *key, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != (int)v->valuedouble || v->valuedouble < lo || v->valuedouble > hi)
        return sp_err(SP_ERR_FORMAT, "%s: metadata key '%s' missing or not an integer in [%d,%d]", path, key, lo, hi);
    *out = (int)v->valuedouble;
    return SP_OK;
}

/* An optional blend table `key` (telea_blend, telea_blend_image): 1..NN_MAX_BLEND numbers in [0,1]. */
static sp_status meta_blend(const char *path, const cJSON *o, const char *key, nn_net_info *in, float *blend,
                            int *blend_n) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    *blend_n = 0;
    if (!a) return SP_OK;
    if (in->arch == NN_ARCH_VGG16)
        return sp_err(SP_ERR_FORMAT, "%s: %s is for the UNets, not vgg16_features", path, key);
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    if (n < 1 || n > NN_MAX_BLEND)
        return sp_err(SP_ERR_FORMAT, "%s: metadata '%s' must be an array of 1..%d numbers", path, key, NN_MAX_BLEND);
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1))
            return sp_err(SP_ERR_FORMAT, "%s: metadata '%s'[%d] is not a number in [0,1]", path, key, i);
        blend[i] = (float)v->valuedouble;
    }
    *blend_n = n;
    return SP_OK;
}

static void meta_str(const cJSON *o, const char *key, char *out, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    snprintf(out, n, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

static sp_status parse_metadata(const st_file *f, nn_net_info *in) {
    const char *path = st_path(f), *js = st_meta(f, "semipaint");
    if (!js) return sp_err(SP_ERR_FORMAT, "%s: no 'semipaint' entry in __metadata__ (not a semipaint weights file)", path);
    cJSON *o = cJSON_Parse(js);
    sp_status st = SP_OK;
    if (!cJSON_IsObject(o)) {
        st = sp_err(SP_ERR_FORMAT, "%s: __metadata__.semipaint is not a JSON object", path);
        goto done;
    }
    int fmt, nk = 0, nc = 0;
    if ((st = meta_int(path, o, "format", 1, 1, &fmt))) goto done;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(o, "arch");
    if (!cJSON_IsString(arch)) {
        st = sp_err(SP_ERR_FORMAT, "%s: metadata has no 'arch'", path);
        goto done;
    }
    if (!strcmp(arch->valuestring, "pconv_unet")) {
        in->arch = NN_ARCH_PCONV_UNET;
        in->arch_name = "pconv_unet";
    } else if (!strcmp(arch->valuestring, "simk_unet")) {
        in->arch = NN_ARCH_SIMK_UNET;
        in->arch_name = "simk_unet";
    } else if (!strcmp(arch->valuestring, "vgg16_features")) {
        in->arch = NN_ARCH_VGG16;
        in->arch_name = "vgg16_features";
    } else {
        st = sp_err(SP_ERR_FORMAT, "%s: unknown arch '%s' (pconv_unet, simk_unet or vgg16_features)", path,
                    arch->valuestring);
        goto done;
    }
    if ((st = meta_int(path, o, "size", 16, 8192, &in->size))) goto done;
    if ((st = meta_int(path, o, "in_channels", 1, 4096, &in->in_channels))) goto done;
    if ((st = meta_int(path, o, "out_channels", 1, 4096, &in->out_channels))) goto done;
    in->k = -1;
    /* the pipeline's buffers hold RGB in and out: a UNet of other widths would overrun them */
    if (in->arch != NN_ARCH_VGG16 && in->out_channels != 3) {
        st = sp_err(SP_ERR_FORMAT, "%s: a %s must have out_channels 3 (RGB), metadata says %d", path, in->arch_name,
                    in->out_channels);
        goto done;
    }
    if (in->arch == NN_ARCH_PCONV_UNET && in->in_channels != 3) {
        st = sp_err(SP_ERR_FORMAT, "%s: a pconv_unet must have in_channels 3 (RGB, the mask is separate), metadata says %d",
                    path, in->in_channels);
        goto done;
    }
    if (in->arch == NN_ARCH_SIMK_UNET) {
        if ((st = meta_int(path, o, "k", 0, 64, &in->k))) goto done;
        if (in->in_channels != 3 + 1 + 3 * in->k) {
            st = sp_err(SP_ERR_FORMAT, "%s: simk_unet with k=%d needs in_channels %d, metadata says %d", path, in->k,
                        4 + 3 * in->k, in->in_channels);
            goto done;
        }
    }
    if (in->arch == NN_ARCH_VGG16) {
        int kern[16];
        if ((st = meta_int_array(path, o, "enc_channels", in->enc_channels, 5, &nc))) goto done;
        if (nc != 5) {
            st = sp_err(SP_ERR_FORMAT, "%s: vgg16_features needs 5 block widths in enc_channels, got %d", path, nc);
            goto done;
        }
        if (cJSON_GetObjectItemCaseSensitive(o, "enc_kernels") &&
            (st = meta_int_array(path, o, "enc_kernels", kern, 16, &nk)))
            goto done;
        for (int i = 0; i < nk; i++)
            if (kern[i] != 3) {
                st = sp_err(SP_ERR_FORMAT, "%s: vgg16_features kernels must be 3", path);
                goto done;
            }
        if (in->in_channels != 3 || in->out_channels != in->enc_channels[4]) {
            st = sp_err(SP_ERR_FORMAT, "%s: vgg16_features needs in_channels 3 and out_channels %d", path,
                        in->enc_channels[4]);
            goto done;
        }
        in->levels = 0;
    } else {
        if ((st = meta_int_array(path, o, "enc_kernels", in->enc_kernels, NN_MAX_LEVELS, &nk))) goto done;
        if ((st = meta_int_array(path, o, "enc_channels", in->enc_channels, NN_MAX_LEVELS, &nc))) goto done;
        if (nk != nc) {
            st = sp_err(SP_ERR_FORMAT, "%s: enc_kernels has %d entries but enc_channels %d", path, nk, nc);
            goto done;
        }
        for (int i = 0; i < nk; i++)
            if (in->enc_kernels[i] % 2 == 0) {
                st = sp_err(SP_ERR_FORMAT, "%s: enc_kernels[%d] = %d is not odd", path, i, in->enc_kernels[i]);
                goto done;
            }
        if (nk < 2) {
            st = sp_err(SP_ERR_FORMAT, "%s: a UNet needs at least 2 levels", path);
            goto done;
        }
        in->levels = nk;
        if (in->arch == NN_ARCH_PCONV_UNET && in->in_channels != 3) {
            st = sp_err(SP_ERR_FORMAT, "%s: pconv_unet needs in_channels 3", path);
            goto done;
        }
    }
    if ((st = meta_blend(path, o, "telea_blend", in, in->blend, &in->blend_n))) goto done;
    if ((st = meta_blend(path, o, "telea_blend_image", in, in->iblend, &in->iblend_n))) goto done;
    meta_str(o, "trained_on", in->trained_on, sizeof in->trained_on);
    meta_str(o, "licence", in->licence, sizeof in->licence);
    meta_str(o, "notes", in->notes, sizeof in->notes);
done:
    cJSON_Delete(o);
    return st;
}

/* ---- building ---- */

static void set_layer(nn_layer *l, int cin, int cout, int k, int stride) {
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    l->stride = stride;
    l->pad = (k - 1) / 2;
}

/* Fills net->layers (shapes only) from the info. */
static sp_status build_layers(nn_net *net) {
    nn_net_info *in = &net->info;
    if (in->arch == NN_ARCH_VGG16) {
        net->nl = VGG_CONVS;
    } else {
        net->nl = 2 * in->levels;
    }
    net->layers = calloc((size_t)net->nl, sizeof(nn_layer));
    if (!net->layers) return sp_err(SP_ERR_NOMEM, "layers");
    if (in->arch == NN_ARCH_VGG16) {
        int li = 0, cin = 3;
        for (int b = 0; b < 5; b++)
            for (int j = 0; j < vgg_block_convs[b]; j++) {
                set_layer(&net->layers[li++], cin, in->enc_channels[b], 3, 1);
                cin = in->enc_channels[b];
            }
        return SP_OK;
    }
    int L = in->levels;
    const int *ch = in->enc_channels;
    for (int i = 0; i < L; i++) set_layer(&net->layers[i], i ? ch[i - 1] : in->in_channels, ch[i], in->enc_kernels[i], 2);
    int prev = ch[L - 1];
    for (int i = 0; i < L; i++) {
        int j = L - 1 - i, cskip = j ? ch[j - 1] : in->in_channels;
        int cout = i < L - 1 ? ch[L - 2 - i] : in->out_channels;
        set_layer(&net->layers[L + i], prev + cskip, cout, 3, 1);
        prev = cout;
    }
    return SP_OK;
}

static void layer_name(const nn_net *net, int i, char *buf, size_t n) {
    if (net->info.arch == NN_ARCH_VGG16)
        snprintf(buf, n, "features.%d", vgg_conv_index[i]);
    else if (i < net->info.levels)
        snprintf(buf, n, "enc.%d", i);
    else
        snprintf(buf, n, "dec.%d", i - net->info.levels);
}

static sp_status load_weights(nn_net *net, const st_file *f) {
    sp_status st;
    for (int i = 0; i < net->nl; i++) {
        nn_layer *l = &net->layers[i];
        char base[32], name[64];
        layer_name(net, i, base, sizeof base);
        size_t nw = (size_t)l->cout * l->cin * l->k * l->k;
        l->w = malloc(nw * sizeof(float));
        l->b = malloc((size_t)l->cout * sizeof(float));
        if (!l->w || !l->b) return sp_err(SP_ERR_NOMEM, "%s: weights of %s", st_path(f), base);
        int64_t wd[4] = {l->cout, l->cin, l->k, l->k}, bd[1] = {l->cout};
        snprintf(name, sizeof name, "%s.weight", base);
        if ((st = st_read_f32(f, name, 4, wd, l->w))) return st;
        snprintf(name, sizeof name, "%s.bias", base);
        if ((st = st_read_f32(f, name, 1, bd, l->b))) return st;
        net->info.params += (long)nw + l->cout;
    }
    if (st_count(f) != 2 * net->nl) {
        for (int t = 0; t < st_count(f); t++) {
            const char *nm = st_at(f, t)->name;
            int known = 0;
            for (int i = 0; i < net->nl && !known; i++) {
                char base[32], a[64], b[64];
                layer_name(net, i, base, sizeof base);
                snprintf(a, sizeof a, "%s.weight", base);
                snprintf(b, sizeof b, "%s.bias", base);
                known = !strcmp(nm, a) || !strcmp(nm, b);
            }
            if (!known)
                return sp_err(SP_ERR_INVALID, "%s: unexpected tensor '%s' for %s", st_path(f), nm, net->info.arch_name);
        }
    }
    return SP_OK;
}

sp_status nn_net_load(nn_backend *be, const char *path, nn_net **out) {
    *out = NULL;
    st_file *f = NULL;
    sp_status st = st_open(path, &f);
    if (st) return st;
    nn_net *net = calloc(1, sizeof *net);
    if (!net) {
        st_close(f);
        return sp_err(SP_ERR_NOMEM, "%s: out of memory", path);
    }
    net->be = be;
    snprintf(net->info.path, sizeof net->info.path, "%s", path);
    memcpy(net->info.sha256, st_sha256(f), 65);
    if ((st = parse_metadata(f, &net->info))) goto fail;
    if ((st = build_layers(net))) goto fail;
    if ((st = load_weights(net, f))) goto fail;
    st_close(f);
    *out = net;
    return SP_OK;
fail:
    st_close(f);
    nn_net_free(net);
    return st;
}

static int conv_out(int in, const nn_layer *l) { return (in + 2 * l->pad - l->k) / l->stride + 1; }

double nn_net_flops(const nn_net *net, int h, int w) {
    double fl = 0;
    int L = net->info.levels;
    if (net->info.arch == NN_ARCH_VGG16) {
        int li = 0;
        for (int b = 0; b < 5; b++) {
            for (int j = 0; j < vgg_block_convs[b]; j++, li++) {
                const nn_layer *l = &net->layers[li];
                fl += 2.0 * l->cout * l->cin * l->k * l->k * h * w;
            }
            if (b < 4) {
                h /= 2;
                w /= 2;
            }
        }
        return fl;
    }
    int hs[NN_MAX_LEVELS + 1], ws[NN_MAX_LEVELS + 1];
    hs[0] = h;
    ws[0] = w;
    for (int i = 0; i < L; i++) {
        const nn_layer *l = &net->layers[i];
        hs[i + 1] = conv_out(hs[i], l);
        ws[i + 1] = conv_out(ws[i], l);
        fl += 2.0 * l->cout * l->cin * l->k * l->k * hs[i + 1] * ws[i + 1];
    }
    for (int i = 0; i < L; i++) {
        const nn_layer *l = &net->layers[L + i];
        int j = L - 1 - i;
        fl += 2.0 * l->cout * l->cin * l->k * l->k * hs[j] * ws[j];
    }
    return fl;
}

/* ---- plans ---- */

/* Finds or allocates the activation memory for (n,h,w); evicts the least recently used plan. */
static sp_status get_plan(nn_net *net, int n, int h, int w, nn_plan **out) {
    nn_plan *victim = &net->plans[0];
    for (int i = 0; i < NN_PLAN_CACHE; i++) {
        nn_plan *p = &net->plans[i];
        if (p->n == n && p->h == h && p->w == w) {
            p->used = ++net->clock;
            *out = p;
            return SP_OK;
        }
        if (p->used < victim->used) victim = p;
    }
    plan_drop(net, victim);
    nn_plan *p = victim;
    nn_backend *be = net->be;
    const nn_net_info *in = &net->info;
    sp_status st = SP_OK;
    p->n = n;
    p->h = h;
    p->w = w;
    p->used = ++net->clock;
    if (in->arch == NN_ARCH_VGG16) {
        /* t[0] input, t[1..13] conv outputs, t[14..17] pools */
        int nt = 0;
        if ((st = nn_tensor_new_input(be, &p->t[nt++], n, 3, h, w))) goto fail;
        int li = 0, hh = h, ww = w;
        for (int b = 0; b < 5; b++) {
            for (int j = 0; j < vgg_block_convs[b]; j++, li++)
                if ((st = nn_tensor_new(be, &p->t[nt++], n, net->layers[li].cout, hh, ww))) goto fail;
            if (b < 4) {
                hh /= 2;
                ww /= 2;
            }
        }
        hh = h;
        ww = w;
        for (int b = 0; b < 4; b++) {
            hh /= 2;
            ww /= 2;
            if ((st = nn_tensor_new(be, &p->t[nt++], n, in->enc_channels[b], hh, ww))) goto fail;
        }
        *out = p;
        return SP_OK;
    }
    /* UNet: t[0] input, t[1..L] encoder outputs, t[L+1..2L] concat buffers, t[2L+1..3L] decoder
     * outputs; masks alongside at the same indices. */
    int L = in->levels, pconv = in->arch == NN_ARCH_PCONV_UNET;
    int hs[NN_MAX_LEVELS + 1], ws[NN_MAX_LEVELS + 1];
    hs[0] = h;
    ws[0] = w;
    if ((st = nn_tensor_new_input(be, &p->t[0], n, in->in_channels, h, w))) goto fail;
    if (pconv && (st = nn_mask_new(be, &p->m[0], n, 1, h, w))) goto fail;
    for (int i = 0; i < L; i++) {
        hs[i + 1] = conv_out(hs[i], &net->layers[i]);
        ws[i + 1] = conv_out(ws[i], &net->layers[i]);
        if ((st = nn_tensor_new(be, &p->t[1 + i], n, in->enc_channels[i], hs[i + 1], ws[i + 1]))) goto fail;
        if (pconv && (st = nn_mask_new(be, &p->m[1 + i], n, 1, hs[i + 1], ws[i + 1]))) goto fail;
    }
    for (int i = 0; i < L; i++) {
        int j = L - 1 - i;
        const nn_layer *l = &net->layers[L + i];
        if ((st = nn_tensor_new(be, &p->t[L + 1 + i], n, l->cin, hs[j], ws[j]))) goto fail;
        if ((st = nn_tensor_new(be, &p->t[2 * L + 1 + i], n, l->cout, hs[j], ws[j]))) goto fail;
        if (pconv && (st = nn_mask_new(be, &p->m[L + 1 + i], n, 2, hs[j], ws[j]))) goto fail;
        if (pconv && (st = nn_mask_new(be, &p->m[2 * L + 1 + i], n, 1, hs[j], ws[j]))) goto fail;
    }
    *out = p;
    return SP_OK;
fail:
    plan_drop(net, p);
    return st;
}

/* ---- forward ---- */

sp_status nn_unet_forward(nn_net *net, int n, int h, int w, const float *x, const float *m, float *y) {
    const nn_net_info *in = &net->info;
    nn_backend *be = net->be;
    const nn_backend_ops *op = be->ops;
    if (in->arch == NN_ARCH_VGG16) return sp_err(SP_ERR_INVALID, "%s: vgg16_features is not a UNet", in->path);
    int L = in->levels, pconv = in->arch == NN_ARCH_PCONV_UNET;
    if (n < 1 || h % (1 << L) || w % (1 << L) || h < (1 << L) || w < (1 << L))
        return sp_err(SP_ERR_INVALID, "%s: %d images of %dx%d: sizes must be positive multiples of %d", in->path, n, w,
                      h, 1 << L);
    if (pconv && !m) return sp_err(SP_ERR_INVALID, "%s: pconv_unet needs a mask", in->path);
    nn_plan *p;
    sp_status st = get_plan(net, n, h, w, &p);
    if (st) return st;
    if ((st = op->upload(be, &p->t[0], 0, in->in_channels, x, NULL, NULL))) return st;
    if (pconv) {
        if ((st = op->mask_upload(be, &p->m[0], m, &in->in_channels))) return st;
        if ((st = op->mask_apply(be, &p->t[0], &p->m[0]))) return st;
    }
    for (int i = 0; i < L; i++) {
        nn_layer *l = &net->layers[i];
        st = pconv ? op->pconv(be, l, &p->t[i], &p->m[i], &p->t[1 + i], &p->m[1 + i], NN_ACT_RELU)
                   : op->conv(be, l, &p->t[i], &p->t[1 + i], NN_ACT_RELU);
        if (st) return sp_err_wrap(st, "%s: enc.%d", in->path, i);
    }
    for (int i = 0; i < L; i++) {
        int j = L - 1 - i, prev = i ? 2 * L + i : L, cat = L + 1 + i, out = 2 * L + 1 + i;
        nn_layer *l = &net->layers[L + i];
        nn_act act = i < L - 1 ? NN_ACT_LRELU : NN_ACT_NONE;
        st = op->up2_concat(be, &p->t[prev], &p->t[j], &p->t[cat], pconv ? &p->m[prev] : NULL,
                            pconv ? &p->m[j] : NULL, pconv ? &p->m[cat] : NULL);
        if (st) return sp_err_wrap(st, "%s: dec.%d concat", in->path, i);
        st = pconv ? op->pconv(be, l, &p->t[cat], &p->m[cat], &p->t[out], &p->m[out], act)
                   : op->conv(be, l, &p->t[cat], &p->t[out], act);
        if (st) return sp_err_wrap(st, "%s: dec.%d", in->path, i);
    }
    return op->download(be, &p->t[3 * L], y);
}

sp_status nn_vgg_forward(nn_net *net, int n, int h, int w, const float *x, nn_pool pool, float *feat, float *desc) {
    const nn_net_info *in = &net->info;
    nn_backend *be = net->be;
    const nn_backend_ops *op = be->ops;
    if (in->arch != NN_ARCH_VGG16) return sp_err(SP_ERR_INVALID, "%s: not a vgg16_features network", in->path);
    if (n < 1 || h % 16 || w % 16 || h < 16 || w < 16)
        return sp_err(SP_ERR_INVALID, "%s: %d images of %dx%d: sizes must be positive multiples of 16", in->path, n, w, h);
    nn_plan *p;
    sp_status st = get_plan(net, n, h, w, &p);
    if (st) return st;
    float scale[3], shift[3];
    for (int c = 0; c < 3; c++) {
        scale[c] = 1.0f / imagenet_std[c];
        shift[c] = -imagenet_mean[c] / imagenet_std[c];
    }
    if ((st = op->upload(be, &p->t[0], 0, 3, x, scale, shift))) return st;
    const nn_tensor *cur = &p->t[0];
    int li = 0;
    for (int b = 0; b < 5; b++) {
        for (int j = 0; j < vgg_block_convs[b]; j++, li++) {
            if ((st = op->conv(be, &net->layers[li], cur, &p->t[1 + li], NN_ACT_RELU)))
                return sp_err_wrap(st, "%s: features.%d", in->path, vgg_conv_index[li]);
            cur = &p->t[1 + li];
        }
        if (b < 4) {
            if ((st = op->maxpool2(be, cur, &p->t[1 + VGG_CONVS + b]))) return st;
            cur = &p->t[1 + VGG_CONVS + b];
        }
    }
    if (feat && (st = op->download(be, cur, feat))) return st;
    if (desc && (st = op->desc_pool(be, cur, pool, desc))) return st;
    return SP_OK;
}
