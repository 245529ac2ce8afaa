/* core/models.c: the one assembly of backend, networks, descriptor and pipeline, with the checks that they fit together. */
#include "core/models.h"

#include <string.h>

extern char **environ;

static const char *const arch_names[] = {"pconv_unet", "simk_unet", "vgg16_features"};

/* The key as messages name it ("weights" when the caller gave none). */
static const char *key_of(const char *key) { return key ? key : "weights"; }

/* Creates m's backend when it has none. */
static sp_status ensure_backend(core_models *m) {
    if (m->be) return SP_OK;
    return nn_backend_new(&m->bo, &m->be);
}

/* Loads `path` (given by `key`) as a network of architecture `arch` into *out. */
static sp_status load_net(core_models *m, const char *path, const char *key, nn_arch arch, nn_net **out) {
    sp_status st = ensure_backend(m);
    if (st) return st;
    if ((st = nn_net_load(m->be, path, out))) return sp_err_wrap(st, "%s", key_of(key));
    const nn_net_info *in = nn_net_get_info(*out);
    if (in->arch != arch)
        return sp_err(SP_ERR_INVALID, "%s: %s holds a %s network, expected %s", key_of(key), path, in->arch_name,
                      arch_names[arch]);
    return SP_OK;
}

/* Checks that `net` (from `key`) works at the size of the first net loaded (`first`, from `fkey`). */
static sp_status same_size(const nn_net *first, const char *fkey, const nn_net *net, const char *key) {
    const nn_net_info *a = nn_net_get_info(first), *b = nn_net_get_info(net);
    if (a->size == b->size) return SP_OK;
    return sp_err(SP_ERR_INVALID, "%s: %s works at %dx%d but %s: %s at %dx%d", key_of(key), b->path, b->size, b->size,
                  key_of(fkey), a->path, a->size, a->size);
}

static int given(const char *s) { return s && s[0]; }

sp_status core_models_descriptor(core_models *m, const char *name, const char *weights, const char *key) {
    sp_status st;
    if (!strncmp(name, "vgg16", 5) && !m->vgg) {
        if (!given(weights))
            return sp_err(SP_ERR_INVALID, "descriptor %s needs %s (vgg16_features weights)", name, key_of(key));
        if ((st = load_net(m, weights, key, NN_ARCH_VGG16, &m->vgg))) return st;
        if (!m->s) m->s = nn_net_get_info(m->vgg)->size;
        m->descriptor_weights_key = key;
    }
    rt_descriptor_free(m->desc);
    m->desc = NULL;
    if ((st = rt_descriptor_new(name, m->vgg, &m->desc))) return st;
    return SP_OK;
}

sp_status core_models_open(const core_models_opts *o, core_models *out) {
    core_models *m = out;
    memset(m, 0, sizeof *m);
    m->bo = (nn_backend_opts){.device = o->device, .gpu = o->gpu, .precision = o->precision, .threads = o->threads,
                              .conv_algo = o->conv_algo};
    m->descriptor_weights_key = o->descriptor_weights_key;
    sp_status st;
    if ((st = nn_backend_opts_from_env(&m->bo, environ))) return st; /* SEMIPAINT_CONV */
    if (o->be) m->be = o->be, m->borrowed_be = 1;
    if (o->backend_always && (st = ensure_backend(m))) goto fail;
    /* the networks, all of one working size */
    const nn_net *first = NULL;
    const char *fkey = NULL;
    if (given(o->coarse)) {
        if ((st = load_net(m, o->coarse, o->coarse_key, NN_ARCH_PCONV_UNET, &m->coarse))) goto fail;
        first = m->coarse, fkey = o->coarse_key;
    }
    if (given(o->refine)) {
        if ((st = load_net(m, o->refine, o->refine_key, NN_ARCH_SIMK_UNET, &m->refine))) goto fail;
        m->k = nn_net_get_info(m->refine)->k;
        if (m->k < 1) {
            st = sp_err(SP_ERR_INVALID, "%s: %s is Sim-0 (k = 0); with a database it must use neighbours (k >= 1)",
                        key_of(o->refine_key), o->refine);
            goto fail;
        }
        if (first && (st = same_size(first, fkey, m->refine, o->refine_key))) goto fail;
        if (!first) first = m->refine, fkey = o->refine_key;
    }
    if (given(o->sim0)) {
        if ((st = load_net(m, o->sim0, o->sim0_key, NN_ARCH_SIMK_UNET, &m->sim0))) goto fail;
        const int k0 = nn_net_get_info(m->sim0)->k;
        if (k0 != 0) {
            st = sp_err(SP_ERR_INVALID, "%s: %s needs %d neighbours%s; it must be a Sim-0 model (k = 0)",
                        key_of(o->sim0_key), o->sim0, k0, o->sim0_why ? o->sim0_why : "");
            goto fail;
        }
        if (first && (st = same_size(first, fkey, m->sim0, o->sim0_key))) goto fail;
        if (!first) first = m->sim0, fkey = o->sim0_key;
    }
    if (first) m->s = nn_net_get_info(first)->size;
    /* the descriptor: named, or the database's; the VGG weights when it needs them (or, without a
     * descriptor, when given: a caller of the bare network) */
    char name[128] = "";
    if (given(o->descriptor) && strcmp(o->descriptor, "auto")) {
        snprintf(name, sizeof name, "%s", o->descriptor);
    } else if (given(o->database)) {
        if ((st = rt_db_peek_descriptor(o->database, name, sizeof name))) {
            st = sp_err_wrap(st, "%s", key_of(o->database_key));
            goto fail;
        }
    }
    if (given(o->descriptor_weights) && (!name[0] || !strncmp(name, "vgg16", 5))) {
        if ((st = load_net(m, o->descriptor_weights, o->descriptor_weights_key, NN_ARCH_VGG16, &m->vgg))) goto fail;
        if (!m->s) m->s = nn_net_get_info(m->vgg)->size;
    }
    if (name[0]) {
        if (!strncmp(name, "vgg16", 5) && !m->vgg && given(o->database)) {
            st = sp_err(SP_ERR_INVALID, "descriptor %s of %s needs %s (vgg16_features weights)", name, o->database,
                        key_of(o->descriptor_weights_key));
            goto fail;
        }
        if ((st = core_models_descriptor(m, name, o->descriptor_weights, o->descriptor_weights_key))) {
            st = sp_err_wrap(st, "%s", given(o->descriptor) && strcmp(o->descriptor, "auto")
                                           ? key_of(o->descriptor_key)
                                           : key_of(o->database_key));
            goto fail;
        }
    }
    return SP_OK;
fail:
    core_models_close(m);
    return st;
}

void core_models_close(core_models *m) {
    rt_descriptor_free(m->desc);
    nn_net_free(m->vgg);
    nn_net_free(m->sim0);
    nn_net_free(m->refine);
    nn_net_free(m->coarse);
    if (!m->borrowed_be) nn_backend_free(m->be);
    memset(m, 0, sizeof *m);
}

sp_status core_models_open_db(const core_models *m, const char *dir, const char *key, int writable, rt_db **out) {
    *out = NULL;
    sp_status st = rt_db_open(dir, m->desc, writable, out);
    if (st) {
        if (m->vgg && st == SP_ERR_INVALID && strstr(sp_err_msg(), "descriptor weights"))
            return sp_err_wrap(st, "%s %s", key_of(m->descriptor_weights_key), nn_net_get_info(m->vgg)->path);
        return st;
    }
    const char *what = m->coarse ? nn_net_get_info(m->coarse)->path
                       : m->refine ? nn_net_get_info(m->refine)->path
                       : m->sim0   ? nn_net_get_info(m->sim0)->path
                                   : NULL;
    if (what && rt_db_size(*out) != m->s) {
        st = sp_err(SP_ERR_INVALID, "%s: %s stores %dx%d images but the models in %s work at %dx%d", key_of(key), dir,
                    rt_db_size(*out), rt_db_size(*out), what, m->s, m->s);
    } else if (rt_db_count(*out) < m->k) {
        st = sp_err(SP_ERR_INVALID, "%s: %s holds %ld images, fewer than the %d neighbours %s needs", key_of(key), dir,
                    rt_db_count(*out), m->k, nn_net_get_info(m->refine)->path);
    }
    if (st) {
        rt_db_close(*out);
        *out = NULL;
    }
    return st;
}

sp_status core_models_pipeline(const core_models *m, nn_net *refine, const nn_retriever *retriever, int blend,
                               nn_pipeline **out) {
    *out = NULL;
    if (!m->coarse || !refine) return sp_err(SP_ERR_INVALID, "a pipeline needs a coarse and a refine network");
    sp_status st = nn_pipeline_new(m->coarse, refine, retriever, out);
    if (st) return st;
    nn_pipeline_opts po = {.blend = blend, .blend_threads = m->bo.threads,
                           .overlap = nn_backend_has(m->be, NN_CAP_ASYNC_HOST_OVERLAP)};
    nn_pipeline_set_opts(*out, &po);
    return SP_OK;
}
