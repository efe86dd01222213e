/* bench_store.c — the coordinator's SQLite store alone (no broker): how many results per
 * second efc_coord_store_result_put commits (one transaction each, synchronous=FULL, WAL), and
 * job assignment per second, with N devices of one class. This is the store half of issue 4's
 * ingestion target (>= 2,000 results/s through the broker); the broker half needs the
 * coordinator program. Prints the figures; asserts nothing.
 * Usage: bench_store [devices (default 1000)] [db path (default /tmp/efc-bench-store.db)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/efc_parse.h"
#include "common/efc_time.h"
#include "coordinator/store.h"

int main(int argc, char **argv)
{
    int64_t n_dev = 1000;
    const char *db = argc > 2 ? argv[2] : "/tmp/efc-bench-store.db";
    struct efc_coord_store *s = NULL;
    struct efc_coord_round r;
    char path[512];

    if (argc > 1 && efc_parse_i64(argv[1], 1, 100000, "devices", &n_dev)) {
        fprintf(stderr, "%s\n", efc_err_detail());
        return 2;
    }
    unlink(db); /* a fresh database */
    snprintf(path, sizeof(path), "%s-wal", db);
    unlink(path);
    snprintf(path, sizeof(path), "%s-shm", db);
    unlink(path);
    if (efc_coord_store_open(db, &s) != EFC_OK) {
        fprintf(stderr, "open: %s\n", efc_err_detail());
        return 1;
    }
    double t0 = efc_time_s();
    for (int64_t d = 0; d < n_dev; d++) {
        struct efc_proto_status st = {.version = EFC_PROTO_VERSION, .online = 1};
        snprintf(st.device_id, sizeof(st.device_id), "dev%lld", (long long)d);
        snprintf(st.hw_class, sizeof(st.hw_class), "x86_64-avx512vnni");
        if (efc_coord_store_device_upsert(s, &st, 0, NULL) != EFC_OK) {
            fprintf(stderr, "upsert: %s\n", efc_err_detail());
            return 1;
        }
    }
    double t_dev = efc_time_s() - t0;
    memset(&r, 0, sizeof(r));
    snprintf(r.round_id, sizeof(r.round_id), "bench");
    memset(r.base_sha256, 'a', 64);
    r.n_policies = 2;
    snprintf(r.policies[0], sizeof(r.policies[0]), "fp32");
    snprintf(r.policies[1], sizeof(r.policies[1]), "int8(calib=kl,weights=channel)");
    r.sla.kind = EFC_COORD_SLA_MAX_DROP;
    r.sla.value = 0.01;
    r.devices_per_class = (int32_t)n_dev;
    if (efc_coord_store_round_create(s, &r) != EFC_OK) {
        fprintf(stderr, "round: %s\n", efc_err_detail());
        return 1;
    }
    int64_t n_res = 0;
    double t_assign = 0, t_put = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t d = 0; d < n_dev; d++) {
            struct efc_coord_job j;
            struct efc_proto_result res;
            char dev[32];
            int dup = 0;
            snprintf(dev, sizeof(dev), "dev%lld", (long long)d);
            double a = efc_time_s();
            if (efc_coord_store_job_assign(s, dev, 1LL << 50, &j) != EFC_OK)
                continue;
            double b = efc_time_s();
            memset(&res, 0, sizeof(res));
            res.version = EFC_PROTO_VERSION;
            snprintf(res.job_id, sizeof(res.job_id), "%s", j.job_id);
            snprintf(res.round_id, sizeof(res.round_id), "%s", j.round_id);
            snprintf(res.device_id, sizeof(res.device_id), "%s", dev);
            snprintf(res.hw_class, sizeof(res.hw_class), "%s", j.hw_class);
            snprintf(res.policy, sizeof(res.policy), "%s", j.policy);
            res.has_labels = 1;
            res.eval_total = 1000;
            res.correct = res.base_correct = res.both_correct = 900;
            res.agree = 990;
            res.p50_ms = res.p90_ms = res.p99_ms = 0.01;
            res.batch = 1;
            res.model_bytes = 70000;
            if (efc_coord_store_result_put(s, &res, 0, &dup) != EFC_OK) {
                fprintf(stderr, "put: %s\n", efc_err_detail());
                return 1;
            }
            t_put += efc_time_s() - b;
            t_assign += b - a;
            n_res++;
        }
    printf("bench_store: store only (no broker), SQLite WAL synchronous=FULL, one transaction "
           "per call, %lld devices of one class, db %s\n", (long long)n_dev, db);
    printf("  device upserts  %8.0f /s\n", (double)n_dev / t_dev);
    printf("  job assignments %8.0f /s\n", (double)n_res / t_assign);
    printf("  results stored  %8.0f /s  (%lld results; issue 4 target through the broker: "
           ">= 2000 /s)\n", (double)n_res / t_put, (long long)n_res);
    efc_coord_store_close(s);
    return 0;
}
