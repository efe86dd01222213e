/* record.c — the calibration record as JSON text (no cJSON in calib: a growing buffer and a
 * small string escaper). Floats are written with %.9g, which round-trips a float. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "calib/calib.h"
#include "common/efc_alloc.h"
#include "common/efc_buf.h"

/* A JSON string literal: quotes, backslashes and control characters escaped; other bytes
 * (UTF-8 included) copied as they are. */
static void jb_string(struct efc_buf *b, const char *s)
{
    efc_buf_printf(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            efc_buf_printf(b, "\\%c", *c);
        else if (*c == '\n')
            efc_buf_printf(b, "\\n");
        else if (*c == '\t')
            efc_buf_printf(b, "\\t");
        else if (*c < 0x20 || *c == 0x7f)
            efc_buf_printf(b, "\\u%04x", *c);
        else
            efc_buf_printf(b, "%c", *c);
    }
    efc_buf_printf(b, "\"");
}

enum efc_status efc_calib_record_json(const struct efc_calib_result *r, char **json)
{
    struct efc_buf b = {0};
    const struct efc_calib_opts *o = &r->opts;

    *json = NULL;
    efc_buf_printf(&b, "{\"calibrator\":");
    jb_string(&b, efc_calib_method_name(o->method));
    if (o->method == EFC_CALIB_PERCENTILE)
        efc_buf_printf(&b, ",\"percentile\":%.10g", o->percentile);
    if (o->method == EFC_CALIB_KL) {
        if (o->kl_levels > 0)
            efc_buf_printf(&b, ",\"kl_levels\":%d", o->kl_levels);
        else
            efc_buf_printf(&b, ",\"kl_levels\":\"grid\"");
    }
    if (o->method == EFC_CALIB_KL || o->method == EFC_CALIB_MSE)
        efc_buf_printf(&b, ",\"zeros\":\"%s\"", o->keep_zeros ? "kept" : "excluded");
    efc_buf_printf(&b,
              ",\"bins\":%d,\"samples\":%d,\"data_n\":%d,\"seed\":%llu,\"selection\":", o->n_bins,
              r->samples, r->data_n, (unsigned long long)o->seed);
    jb_string(&b, r->samples < r->data_n ? "rng_shuffle_first_sorted" : "all");
    efc_buf_printf(&b, ",\"data_digest\":");
    jb_string(&b, r->data_digest);
    efc_buf_printf(&b, ",\"scheme\":\"u8_asymmetric\",\"ranges\":[");
    for (int32_t i = 0; i < r->n_ranges; i++) {
        const struct efc_calib_range *g = &r->ranges[i];
        efc_buf_printf(&b, "%s{\"tensor\":%d,\"name\":", i ? "," : "", g->tensor);
        jb_string(&b, g->name);
        efc_buf_printf(&b,
                  ",\"lo\":%.9g,\"hi\":%.9g,\"threshold\":%.9g,\"min\":%.9g,\"max\":%.9g,"
                  "\"scale\":%.9g,\"zero_point\":%d,\"count\":%llu,\"zeros\":%llu",
                  (double)g->lo, (double)g->hi, (double)g->threshold, (double)g->min,
                  (double)g->max, (double)g->scale, g->zero_point, (unsigned long long)g->count,
                  (unsigned long long)g->n_zero);
        if (g->shares >= 0)
            efc_buf_printf(&b, ",\"shares\":%d", g->shares);
        if (g->exact)
            efc_buf_printf(&b, ",\"exact\":true");
        efc_buf_printf(&b, "}");
    }
    efc_buf_printf(&b, "]}");
    if (b.oom) {
        efc_free(b.p);
        return efc_errf(EFC_ENOMEM, "calib: record JSON");
    }
    *json = b.p;
    return EFC_OK;
}
