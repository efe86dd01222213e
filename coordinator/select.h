/* select.h — per-class policy selection from fleet results (docs/coordinator.md "Selection").
 *
 * Owns the statistics and the decision: results (struct efc_proto_result, as stored) are grouped
 * by hardware class and policy; accuracy is pooled over the class's devices (sum correct / sum
 * eval_total) with a 95 % Wilson interval; the drop vs FP32 is paired (base_only, cand_only on
 * the same samples) with Newcombe's method 10 interval. A candidate MEETS the SLA when the CI's
 * relevant end clears it, FAILS when the CI lies wholly on the wrong side, and is UNDECIDED
 * ("within noise") otherwise, with an estimate of the extra samples that would settle it. The
 * best candidate meeting the SLA minimises the objective (ties by the other objective); a device
 * whose own paired results show the class choice failing beyond the noise gets its own pick
 * (an exception, with the evidence). Reports: text table, JSON and a self-contained HTML/SVG
 * Pareto report (report.c).
 * Pure logic over arrays: no SQLite, no I/O except efc_coord_report_html_write.
 * Ownership: efc_coord_select() returns a selection freed with efc_coord_selection_free();
 * report functions return NUL-terminated text freed with efc_free. Thread-safe (no shared state).
 */
#ifndef EFC_COORDINATOR_SELECT_H
#define EFC_COORDINATOR_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"
#include "proto/proto.h"

#define EFC_COORD_Z95 1.959963984540054 /* two-sided 95 % normal quantile */

enum efc_coord_sla_kind {
    EFC_COORD_SLA_ABSOLUTE = 0, /* pooled accuracy >= value */
    EFC_COORD_SLA_MAX_DROP = 1  /* paired drop vs FP32 <= value */
};

struct efc_coord_sla {
    enum efc_coord_sla_kind kind;
    double value; /* a fraction in [0, 1] (0.85 accuracy, 0.01 drop) */
};

enum efc_coord_objective {
    EFC_COORD_OBJ_BYTES = 0, /* model bytes */
    EFC_COORD_OBJ_P50 = 1    /* median over the class's devices of batch-1 p50 latency */
};

enum efc_coord_verdict {
    EFC_COORD_MEETS = 0,
    EFC_COORD_FAILS = 1,     /* CI wholly on the wrong side of the SLA */
    EFC_COORD_UNDECIDED = 2, /* CI straddles the SLA: within the noise */
    EFC_COORD_ERROR = 3      /* failed results or no labelled samples */
};

/* An estimate with its 95 % interval. */
struct efc_coord_ci {
    double est, lo, hi;
};

/* Wilson score interval for k successes in n trials (n > 0; n == 0 gives [0, 1]). */
void efc_coord_ci_wilson(int64_t k, int64_t n, double z, struct efc_coord_ci *out);

/* Paired difference of proportions p_base - p_cand from the 2x2 table on the same samples:
 * both = both correct, base_only, cand_only, neither. est = (base_only - cand_only) / n.
 * Newcombe (1998) method 10 (Wilson score limits of each margin combined with the phi
 * correlation, phi's numerator continuity-corrected when positive). */
void efc_coord_ci_paired_newcombe(int64_t both, int64_t base_only, int64_t cand_only,
                                  int64_t neither, double z, struct efc_coord_ci *out);
/* The Wald interval on the same difference (for comparison and documentation only). */
void efc_coord_ci_paired_wald(int64_t base_only, int64_t cand_only, int64_t n, double z,
                              struct efc_coord_ci *out);

/* One (class, policy) candidate, pooled over the class's devices. */
struct efc_coord_candidate {
    char policy[EFC_PROTO_POLICY_MAX];
    int32_t is_fp32;
    int32_t n_devices;       /* distinct devices with any result */
    int32_t n_ok, n_failed;  /* results */
    int64_t correct, total;  /* pooled, labelled OK results */
    int64_t both, base_only, cand_only, neither;
    struct efc_coord_ci acc;  /* Wilson, pooled */
    struct efc_coord_ci drop; /* paired vs FP32, Newcombe 10 */
    double acc_min, acc_mean; /* over devices (per-device correct/total) */
    double p50_ms, p99_ms;    /* median over devices of p50_ms / p99_ms */
    uint64_t model_bytes;     /* max over OK results */
    int32_t sparse_layers;    /* max over OK results: layers the devices ran sparse */
    enum efc_coord_verdict verdict;
    int64_t more_samples;   /* UNDECIDED: extra samples estimated to settle it; -1 unknown */
    int32_t pareto_p50;     /* 1 if on the accuracy-vs-p50 Pareto front of the class */
    int32_t pareto_bytes;   /* 1 if on the accuracy-vs-bytes Pareto front */
    char reason[320];       /* why rejected / undecided ("" for MEETS) */
};

/* A device whose own paired results show the class choice failing the SLA beyond the noise. */
struct efc_coord_exception {
    char device_id[EFC_PROTO_ID_MAX];
    char policy[EFC_PROTO_POLICY_MAX]; /* the device's own pick ("" if none meets) */
    struct efc_coord_ci class_choice_acc;  /* evidence: the class choice on this device */
    struct efc_coord_ci class_choice_drop;
    int64_t n; /* the device's labelled samples for the class choice */
    char evidence[256];
};

struct efc_coord_class_selection {
    char hw_class[EFC_PROTO_CLASS_MAX];
    int32_t n_devices;
    struct efc_coord_candidate *cands; /* "fp32" first, then by policy string */
    size_t n_cands;
    int32_t chosen;    /* index in cands, -1 if none meets the SLA */
    int32_t runner_up; /* -1 if none */
    int32_t fp32;      /* index of the fp32 candidate, -1 if absent */
    struct efc_coord_exception *exceptions;
    size_t n_exceptions;
};

struct efc_coord_selection {
    struct efc_coord_sla sla;
    enum efc_coord_objective objective;
    struct efc_coord_class_selection *classes; /* sorted by class name */
    size_t n_classes;
};

struct efc_coord_select_opts {
    struct efc_coord_sla sla;
    enum efc_coord_objective objective;
    double z;            /* 0 = EFC_COORD_Z95 */
    double p50_tie_rel;  /* p50 values within this relative gap tie; 0 = default 0.01 */
};

/* Select per class. results: n stored results of one round (any order). Errors: EFC_EINVAL
 * (bad options), EFC_ENOMEM. *out is freed with efc_coord_selection_free. */
enum efc_status efc_coord_select(const struct efc_proto_result *results, size_t n,
                                 const struct efc_coord_select_opts *opts,
                                 struct efc_coord_selection **out);
void efc_coord_selection_free(struct efc_coord_selection *sel);

/* Verdict of an interval against an SLA: for EFC_COORD_SLA_ABSOLUTE, ci is the accuracy; for
 * EFC_COORD_SLA_MAX_DROP, ci is the drop. *more (may be NULL) gets the extra samples, for an
 * UNDECIDED verdict, that would shrink the CI (width ~ 1/sqrt(n)) enough to settle it at the
 * current estimate; 0 when decided, -1 when the estimate sits on the threshold. */
enum efc_coord_verdict efc_coord_sla_verdict(const struct efc_coord_sla *sla,
                                             const struct efc_coord_ci *ci, int64_t n,
                                             int64_t *more);
const char *efc_coord_verdict_str(enum efc_coord_verdict v);

/* Reports (report.c). Text table and JSON: *out freed with efc_free. */
enum efc_status efc_coord_report_table(const struct efc_coord_selection *sel, char **out);
enum efc_status efc_coord_report_json(const struct efc_coord_selection *sel, char **out);
/* JSON of one class (the selections table's report column). */
enum efc_status efc_coord_report_class_json(const struct efc_coord_selection *sel, size_t i,
                                            char **out);
/* Self-contained HTML with one SVG per class and axis (accuracy vs p50, accuracy vs bytes),
 * the Pareto front drawn as a line. */
enum efc_status efc_coord_report_html(const struct efc_coord_selection *sel, const char *title,
                                      char **out);
/* The same with an HTML fragment (e.g. the rollout state) before the end of the body;
 * appendix may be NULL. */
enum efc_status efc_coord_report_html_with(const struct efc_coord_selection *sel,
                                           const char *title, const char *appendix, char **out);
/* efc_coord_report_html_with written atomically to path (efc_fs_write_atomic). */
enum efc_status efc_coord_report_html_write(const struct efc_coord_selection *sel,
                                            const char *title, const char *appendix,
                                            const char *path);

#endif
