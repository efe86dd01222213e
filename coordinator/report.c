/* report.c — the selection as a text table, JSON (cJSON) and a self-contained HTML/SVG report
 * with the Pareto fronts (accuracy vs p50 latency and vs model bytes) per class. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_buf.h"
#include "common/efc_fs.h"
#include "coordinator/select.h"

static enum efc_status sb_finish(struct efc_buf *b, char **out)
{
    if (b->oom || !b->p) {
        efc_free(b->p);
        return efc_errf(EFC_ENOMEM, "report: out of memory");
    }
    *out = b->p;
    return EFC_OK;
}

/* Minimal HTML/XML escaping for policy strings and class names. */
static void sb_html(struct efc_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            efc_buf_printf(b, "&lt;");
            break;
        case '>':
            efc_buf_printf(b, "&gt;");
            break;
        case '&':
            efc_buf_printf(b, "&amp;");
            break;
        case '"':
            efc_buf_printf(b, "&quot;");
            break;
        default:
            efc_buf_printf(b, "%c", *s);
        }
    }
}

static const char *sla_str(const struct efc_coord_selection *sel, char *buf, size_t len)
{
    if (sel->sla.kind == EFC_COORD_SLA_ABSOLUTE)
        snprintf(buf, len, "accuracy >= %.4f", sel->sla.value);
    else
        snprintf(buf, len, "drop vs fp32 <= %.4f", sel->sla.value);
    return buf;
}

static const char *obj_str(enum efc_coord_objective o)
{
    return o == EFC_COORD_OBJ_BYTES ? "bytes" : "p50";
}

enum efc_status efc_coord_report_table(const struct efc_coord_selection *sel, char **out)
{
    struct efc_buf b = {0};
    char sla[64];

    efc_buf_printf(&b, "SLA: %s; objective: %s (ties by %s); 95 %% CIs\n",
              sla_str(sel, sla, sizeof(sla)), obj_str(sel->objective),
              obj_str(sel->objective == EFC_COORD_OBJ_BYTES ? EFC_COORD_OBJ_P50
                                                            : EFC_COORD_OBJ_BYTES));
    efc_buf_printf(&b, "%-20s %4s  %-36s %10s  %15s  %13s  %8s %6s  %s\n", "class", "devs", "chosen",
              "bytes", "p50/p99 ms", "acc min/mean", "speed-up", "size", "runner-up");
    for (size_t k = 0; k < sel->n_classes; k++) {
        const struct efc_coord_class_selection *cs = &sel->classes[k];
        const struct efc_coord_candidate *f = cs->fp32 >= 0 ? &cs->cands[cs->fp32] : NULL;
        if (cs->chosen < 0) {
            efc_buf_printf(&b, "%-20s %4d  %-36s\n", cs->hw_class, cs->n_devices,
                      "(none meets the SLA)");
        } else {
            const struct efc_coord_candidate *c = &cs->cands[cs->chosen];
            char pl[32], ac[32], sp[16] = "-", sz[16] = "-";
            snprintf(pl, sizeof(pl), "%.3f/%.3f", c->p50_ms, c->p99_ms);
            snprintf(ac, sizeof(ac), "%.4f/%.4f", c->acc_min, c->acc_mean);
            if (f && c->p50_ms > 0)
                snprintf(sp, sizeof(sp), "%.2fx", f->p50_ms / c->p50_ms);
            if (f && f->model_bytes > 0)
                snprintf(sz, sizeof(sz), "%.3f", (double)c->model_bytes / (double)f->model_bytes);
            efc_buf_printf(&b, "%-20s %4d  %-36s %10llu  %15s  %13s  %8s %6s  %s\n", cs->hw_class,
                      cs->n_devices, c->policy, (unsigned long long)c->model_bytes, pl, ac, sp, sz,
                      cs->runner_up >= 0 ? cs->cands[cs->runner_up].policy : "-");
        }
        for (size_t i = 0; i < cs->n_cands; i++) {
            const struct efc_coord_candidate *c = &cs->cands[i];
            if (c->verdict == EFC_COORD_FAILS || c->verdict == EFC_COORD_ERROR)
                efc_buf_printf(&b, "    rejected %s: %s\n", c->policy, c->reason);
            else if (c->verdict == EFC_COORD_UNDECIDED)
                efc_buf_printf(&b, "    not chosen %s: %s\n", c->policy, c->reason);
        }
        for (size_t i = 0; i < cs->n_exceptions; i++) {
            const struct efc_coord_exception *e = &cs->exceptions[i];
            efc_buf_printf(&b, "    exception device %s -> %s (%s)\n", e->device_id,
                      e->policy[0] ? e->policy : "(none meets the SLA)", e->evidence);
        }
    }
    return sb_finish(&b, out);
}

static cJSON *ci_json(const struct efc_coord_ci *ci)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "est", ci->est);
    cJSON_AddNumberToObject(o, "lo", ci->lo);
    cJSON_AddNumberToObject(o, "hi", ci->hi);
    return o;
}

static cJSON *class_json(const struct efc_coord_class_selection *cs)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "class", cs->hw_class);
    cJSON_AddNumberToObject(o, "devices", cs->n_devices);
    if (cs->chosen >= 0)
        cJSON_AddStringToObject(o, "chosen", cs->cands[cs->chosen].policy);
    else
        cJSON_AddNullToObject(o, "chosen");
    if (cs->runner_up >= 0)
        cJSON_AddStringToObject(o, "runner_up", cs->cands[cs->runner_up].policy);
    else
        cJSON_AddNullToObject(o, "runner_up");
    const struct efc_coord_candidate *f = cs->fp32 >= 0 ? &cs->cands[cs->fp32] : NULL;
    cJSON *arr = cJSON_AddArrayToObject(o, "candidates");
    for (size_t i = 0; arr && i < cs->n_cands; i++) {
        const struct efc_coord_candidate *c = &cs->cands[i];
        cJSON *j = cJSON_CreateObject();
        if (!j)
            break;
        cJSON_AddItemToArray(arr, j);
        cJSON_AddStringToObject(j, "policy", c->policy);
        cJSON_AddStringToObject(j, "verdict", efc_coord_verdict_str(c->verdict));
        cJSON_AddStringToObject(j, "reason", c->reason);
        cJSON_AddNumberToObject(j, "devices", c->n_devices);
        cJSON_AddNumberToObject(j, "ok", c->n_ok);
        cJSON_AddNumberToObject(j, "failed", c->n_failed);
        cJSON_AddNumberToObject(j, "correct", (double)c->correct);
        cJSON_AddNumberToObject(j, "total", (double)c->total);
        cJSON_AddItemToObject(j, "accuracy", ci_json(&c->acc));
        cJSON_AddItemToObject(j, "drop", ci_json(&c->drop));
        cJSON_AddNumberToObject(j, "accuracy_min", c->acc_min);
        cJSON_AddNumberToObject(j, "accuracy_mean", c->acc_mean);
        cJSON_AddNumberToObject(j, "p50_ms", c->p50_ms);
        cJSON_AddNumberToObject(j, "p99_ms", c->p99_ms);
        cJSON_AddNumberToObject(j, "model_bytes", (double)c->model_bytes);
        cJSON_AddNumberToObject(j, "sparse_layers", c->sparse_layers);
        if (f && c->p50_ms > 0 && f->model_bytes > 0) {
            cJSON_AddNumberToObject(j, "speedup_vs_fp32", f->p50_ms / c->p50_ms);
            cJSON_AddNumberToObject(j, "size_vs_fp32",
                                    (double)c->model_bytes / (double)f->model_bytes);
        }
        cJSON_AddNumberToObject(j, "more_samples", (double)c->more_samples);
        cJSON_AddBoolToObject(j, "pareto_p50", c->pareto_p50);
        cJSON_AddBoolToObject(j, "pareto_bytes", c->pareto_bytes);
    }
    cJSON *ex = cJSON_AddArrayToObject(o, "exceptions");
    for (size_t i = 0; ex && i < cs->n_exceptions; i++) {
        const struct efc_coord_exception *e = &cs->exceptions[i];
        cJSON *j = cJSON_CreateObject();
        if (!j)
            break;
        cJSON_AddItemToArray(ex, j);
        cJSON_AddStringToObject(j, "device", e->device_id);
        if (e->policy[0])
            cJSON_AddStringToObject(j, "policy", e->policy);
        else
            cJSON_AddNullToObject(j, "policy");
        cJSON_AddItemToObject(j, "class_choice_accuracy", ci_json(&e->class_choice_acc));
        cJSON_AddItemToObject(j, "class_choice_drop", ci_json(&e->class_choice_drop));
        cJSON_AddNumberToObject(j, "samples", (double)e->n);
        cJSON_AddStringToObject(j, "evidence", e->evidence);
    }
    return o;
}

static enum efc_status json_print(cJSON *root, char **out)
{
    char *txt = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!txt)
        return efc_errf(EFC_ENOMEM, "report: JSON");
    *out = efc_strdup(txt);
    cJSON_free(txt);
    return *out ? EFC_OK : efc_errf(EFC_ENOMEM, "report: JSON");
}

enum efc_status efc_coord_report_class_json(const struct efc_coord_selection *sel, size_t i,
                                            char **out)
{
    if (i >= sel->n_classes)
        return efc_errf(EFC_EINVAL, "report: class %zu of %zu", i, sel->n_classes);
    return json_print(class_json(&sel->classes[i]), out);
}

enum efc_status efc_coord_report_json(const struct efc_coord_selection *sel, char **out)
{
    char sla[64];
    cJSON *root = cJSON_CreateObject();
    if (root) {
        cJSON_AddStringToObject(root, "sla", sla_str(sel, sla, sizeof(sla)));
        cJSON_AddStringToObject(root, "sla_kind",
                                sel->sla.kind == EFC_COORD_SLA_ABSOLUTE ? "absolute"
                                                                        : "max_drop");
        cJSON_AddNumberToObject(root, "sla_value", sel->sla.value);
        cJSON_AddStringToObject(root, "objective", obj_str(sel->objective));
        cJSON *arr = cJSON_AddArrayToObject(root, "classes");
        for (size_t k = 0; arr && k < sel->n_classes; k++)
            cJSON_AddItemToArray(arr, class_json(&sel->classes[k]));
    }
    return json_print(root, out);
}

/* ---- HTML / SVG ----------------------------------------------------------------------- */

#define SVG_W 420
#define SVG_H 280
#define SVG_PAD 50

static double xval(const struct efc_coord_candidate *c, int by_bytes)
{
    return by_bytes ? (double)c->model_bytes : c->p50_ms;
}

static int cand_plotted(const struct efc_coord_candidate *c)
{
    return c->verdict != EFC_COORD_ERROR && c->total > 0;
}

static void svg_plot(struct efc_buf *b, const struct efc_coord_class_selection *cs, int by_bytes,
                     const struct efc_coord_selection *sel)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    size_t np = 0;
    for (size_t i = 0; i < cs->n_cands; i++) {
        const struct efc_coord_candidate *c = &cs->cands[i];
        if (!cand_plotted(c))
            continue;
        np++;
        x0 = fmin(x0, xval(c, by_bytes));
        x1 = fmax(x1, xval(c, by_bytes));
        y0 = fmin(y0, c->acc.lo);
        y1 = fmax(y1, c->acc.hi);
    }
    efc_buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                 "viewBox=\"0 0 %d %d\">\n", SVG_W, SVG_H, SVG_W, SVG_H);
    efc_buf_printf(b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#fff\" "
                 "stroke=\"#ccc\"/>\n", SVG_W, SVG_H);
    efc_buf_printf(b, "<text x=\"%d\" y=\"16\" font-size=\"12\" text-anchor=\"middle\">accuracy vs "
                 "%s</text>\n", SVG_W / 2, by_bytes ? "model bytes" : "p50 latency (ms)");
    if (np == 0) {
        efc_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">no "
                     "results</text>\n</svg>\n", SVG_W / 2, SVG_H / 2);
        return;
    }
    if (x1 - x0 < 1e-12) {
        x0 -= 0.5 * (x0 > 0 ? x0 : 1.0);
        x1 += 0.5 * (x1 > 0 ? x1 : 1.0);
    }
    if (y1 - y0 < 1e-6) {
        y0 -= 0.01;
        y1 += 0.01;
    }
    double sx = (SVG_W - 2.0 * SVG_PAD) / (x1 - x0), sy = (SVG_H - 2.0 * SVG_PAD) / (y1 - y0);
#define PX(v) (SVG_PAD + ((v)-x0) * sx)
#define PY(v) (SVG_H - SVG_PAD - ((v)-y0) * sy)
    /* axes and range labels */
    efc_buf_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#000\"/>\n", SVG_PAD,
              SVG_H - SVG_PAD, SVG_W - SVG_PAD, SVG_H - SVG_PAD);
    efc_buf_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#000\"/>\n", SVG_PAD,
              SVG_PAD, SVG_PAD, SVG_H - SVG_PAD);
    efc_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\">%.4g</text>\n", SVG_PAD,
              SVG_H - SVG_PAD + 14, x0);
    efc_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%.4g</text>\n",
              SVG_W - SVG_PAD, SVG_H - SVG_PAD + 14, x1);
    efc_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%.4f</text>\n",
              SVG_PAD - 4, SVG_H - SVG_PAD, y0);
    efc_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%.4f</text>\n",
              SVG_PAD - 4, SVG_PAD + 8, y1);
    if (sel->sla.kind == EFC_COORD_SLA_ABSOLUTE && sel->sla.value >= y0 &&
        sel->sla.value <= y1)
        efc_buf_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#c00\" "
                     "stroke-dasharray=\"4 3\"/>\n", SVG_PAD, PY(sel->sla.value),
                  SVG_W - SVG_PAD, PY(sel->sla.value));
    /* Pareto front: front points sorted by x, joined by a line. */
    efc_buf_printf(b, "<polyline fill=\"none\" stroke=\"#07c\" points=\"");
    int done[256] = {0};
    for (size_t step = 0; step < cs->n_cands && step < 256; step++) {
        int best = -1;
        for (size_t i = 0; i < cs->n_cands && i < 256; i++) {
            const struct efc_coord_candidate *c = &cs->cands[i];
            int on = by_bytes ? c->pareto_bytes : c->pareto_p50;
            if (!on || done[i] || !cand_plotted(c))
                continue;
            if (best < 0 || xval(c, by_bytes) < xval(&cs->cands[best], by_bytes))
                best = (int)i;
        }
        if (best < 0)
            break;
        done[best] = 1;
        efc_buf_printf(b, "%.1f,%.1f ", PX(xval(&cs->cands[best], by_bytes)),
                  PY(cs->cands[best].acc.est));
    }
    efc_buf_printf(b, "\"/>\n");
    for (size_t i = 0; i < cs->n_cands; i++) {
        const struct efc_coord_candidate *c = &cs->cands[i];
        if (!cand_plotted(c))
            continue;
        double px = PX(xval(c, by_bytes)), py = PY(c->acc.est);
        const char *col = (int32_t)i == cs->chosen ? "#0a0"
                          : c->verdict == EFC_COORD_MEETS ? "#07c"
                                                          : "#999";
        efc_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                  px, PY(c->acc.lo), px, PY(c->acc.hi), col);
        efc_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>", px, py, col);
        sb_html(b, c->policy);
        efc_buf_printf(b, ": accuracy %.4f [%.4f, %.4f], p50 %.3f ms, %llu bytes, %s</title>"
                     "</circle>\n", c->acc.est, c->acc.lo, c->acc.hi, c->p50_ms,
                  (unsigned long long)c->model_bytes, efc_coord_verdict_str(c->verdict));
        efc_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\">", px + 5, py - 5);
        sb_html(b, c->policy);
        efc_buf_printf(b, "</text>\n");
    }
#undef PX
#undef PY
    efc_buf_printf(b, "</svg>\n");
}

enum efc_status efc_coord_report_html(const struct efc_coord_selection *sel, const char *title,
                                      char **out)
{
    return efc_coord_report_html_with(sel, title, NULL, out);
}

enum efc_status efc_coord_report_html_with(const struct efc_coord_selection *sel,
                                           const char *title, const char *appendix, char **out)
{
    struct efc_buf b = {0};
    char sla[64];
    char *table = NULL;
    enum efc_status st = efc_coord_report_table(sel, &table);
    if (st != EFC_OK)
        return st;

    efc_buf_printf(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    sb_html(&b, title ? title : "efc selection");
    efc_buf_printf(&b, "</title>\n<style>body{font-family:sans-serif;margin:1em}"
                  "pre{background:#f6f6f6;padding:.5em;overflow-x:auto}"
                  "svg{margin:.5em}</style></head><body>\n<h1>");
    sb_html(&b, title ? title : "efc selection");
    efc_buf_printf(&b, "</h1>\n<p>SLA: ");
    sb_html(&b, sla_str(sel, sla, sizeof(sla)));
    efc_buf_printf(&b, "; objective: %s. Points: pooled accuracy with its 95 %% Wilson interval; "
                  "green = chosen, blue = meets the SLA, grey = not; the blue line is the "
                  "Pareto front.</p>\n<pre>", obj_str(sel->objective));
    sb_html(&b, table);
    efc_buf_printf(&b, "</pre>\n");
    efc_free(table);
    for (size_t k = 0; k < sel->n_classes; k++) {
        const struct efc_coord_class_selection *cs = &sel->classes[k];
        efc_buf_printf(&b, "<h2>");
        sb_html(&b, cs->hw_class);
        efc_buf_printf(&b, " (%d devices)</h2>\n<div>\n", cs->n_devices);
        svg_plot(&b, cs, 0, sel);
        svg_plot(&b, cs, 1, sel);
        efc_buf_printf(&b, "</div>\n");
    }
    if (appendix)
        efc_buf_printf(&b, "%s", appendix);
    efc_buf_printf(&b, "</body></html>\n");
    return sb_finish(&b, out);
}

enum efc_status efc_coord_report_html_write(const struct efc_coord_selection *sel,
                                            const char *title, const char *appendix,
                                            const char *path)
{
    char *html = NULL;
    enum efc_status st = efc_coord_report_html_with(sel, title, appendix, &html);
    if (st != EFC_OK)
        return st;
    st = efc_fs_write_atomic(path, html, strlen(html));
    efc_free(html);
    return st;
}
