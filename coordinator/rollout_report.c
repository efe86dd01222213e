/* rollout_report.c — the rollout state of every class as an HTML fragment, for the round's
 * report (rollout.h efc_coord_rollout_html). */
#include <stdio.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_buf.h"
#include "coordinator/rollout.h"

static void esc(struct efc_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            efc_buf_printf(b, "&lt;");
        else if (*s == '>')
            efc_buf_printf(b, "&gt;");
        else if (*s == '&')
            efc_buf_printf(b, "&amp;");
        else if (*s == '"')
            efc_buf_printf(b, "&quot;");
        else
            efc_buf_printf(b, "%c", *s);
    }
}

/* One rollout: a heading line and its devices. */
static void one(struct efc_buf *b, struct efc_coord_store *s, const struct efc_coord_rollout *r)
{
    struct efc_coord_rdev *d = NULL;
    size_t n = 0;
    int32_t n_waves = 1;

    efc_coord_waves_parse(r->waves, &n_waves);
    efc_buf_printf(b, "<h3>");
    esc(b, r->rollout_id);
    efc_buf_printf(b, " %s ", r->kind == EFC_COORD_ROLLOUT_ROLLBACK ? "rollback to" : "install");
    esc(b, r->policy);
    efc_buf_printf(b, " (version %llu): %s, wave %d/%d</h3>\n", (unsigned long long)r->version,
                   efc_coord_rollout_state_str(r->state), (int)r->wave + 1, (int)n_waves);
    if (r->reason[0]) {
        efc_buf_printf(b, "<p>");
        esc(b, r->reason);
        efc_buf_printf(b, "</p>\n");
    }
    if (efc_coord_store_rdevs_list(s, r->rollout_id, &d, &n) != EFC_OK || n == 0) {
        efc_free(d);
        return;
    }
    efc_buf_printf(b, "<table border=\"1\" cellpadding=\"3\"><tr><th>wave</th><th>device</th>"
                      "<th>state</th><th>accuracy</th><th>p99 ms</th><th>reason</th></tr>\n");
    for (size_t i = 0; i < n; i++) {
        efc_buf_printf(b, "<tr><td>%d</td><td>", (int)d[i].wave + 1);
        esc(b, d[i].device_id);
        efc_buf_printf(b, "</td><td>%s</td><td>", efc_coord_rdev_state_str(d[i].state));
        if (d[i].eval_total > 0)
            efc_buf_printf(b, "%.4f (%d/%d)", (double)d[i].correct / d[i].eval_total,
                           d[i].correct, d[i].eval_total);
        efc_buf_printf(b, "</td><td>");
        if (d[i].eval_total > 0)
            efc_buf_printf(b, "%.3f", d[i].p99_ms);
        efc_buf_printf(b, "</td><td>");
        esc(b, d[i].reason);
        efc_buf_printf(b, "</td></tr>\n");
    }
    efc_buf_printf(b, "</table>\n");
    efc_free(d);
}

enum efc_status efc_coord_rollout_html(struct efc_coord_store *s, char **out)
{
    struct efc_coord_rollout *ro = NULL;
    struct efc_coord_device_model *dm = NULL;
    size_t n_ro = 0, n_dm = 0;
    struct efc_buf b = {0};
    enum efc_status st;

    *out = NULL;
    if ((st = efc_coord_store_rollouts_list(s, &ro, &n_ro)) != EFC_OK)
        return st;
    if (n_ro == 0) {
        efc_free(ro);
        return EFC_OK;
    }
    if ((st = efc_coord_store_device_models(s, &dm, &n_dm)) != EFC_OK) {
        efc_free(ro);
        return st;
    }
    efc_buf_printf(&b, "<h2>Rollouts (OTA)</h2>\n<p>What each device runs, from its last "
                       "report:</p>\n<table border=\"1\" cellpadding=\"3\"><tr><th>class</th>"
                       "<th>device</th><th>policy</th><th>version</th><th>installed by</th>"
                       "</tr>\n");
    for (size_t i = 0; i < n_dm; i++) {
        efc_buf_printf(&b, "<tr><td>");
        esc(&b, dm[i].hw_class);
        efc_buf_printf(&b, "</td><td>");
        esc(&b, dm[i].device_id);
        efc_buf_printf(&b, "</td><td>");
        esc(&b, dm[i].policy);
        efc_buf_printf(&b, "</td><td>%llu</td><td>", (unsigned long long)dm[i].version);
        esc(&b, dm[i].rollout_id);
        efc_buf_printf(&b, "</td></tr>\n");
    }
    efc_buf_printf(&b, "</table>\n");
    /* Per class, newest rollout first (the list is ordered by version, newest first). */
    for (size_t i = 0; i < n_ro; i++) {
        int first = 1;
        for (size_t k = 0; k < i; k++)
            first &= strcmp(ro[k].hw_class, ro[i].hw_class) != 0;
        if (!first)
            continue;
        efc_buf_printf(&b, "<h2>");
        esc(&b, ro[i].hw_class);
        efc_buf_printf(&b, ": rollouts</h2>\n");
        for (size_t k = i; k < n_ro; k++)
            if (!strcmp(ro[k].hw_class, ro[i].hw_class))
                one(&b, s, &ro[k]);
    }
    efc_free(ro);
    efc_free(dm);
    if (b.oom) {
        efc_free(b.p);
        return efc_errf(EFC_ENOMEM, "rollout report");
    }
    *out = b.p;
    return EFC_OK;
}
