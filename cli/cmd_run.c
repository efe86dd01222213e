/* efc run — run a model on a .npy tensor of raw inputs and write the logits as .npy. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "model/efm.h"
#include "model/exec.h"

static void help(void)
{
    printf("usage: efc run model.efm --input x.npy -o y.npy\n\n"
           "  --input F   .npy (uint8 or float32) of raw inputs: shape [N, <sample shape>] or\n"
           "              one sample; efc applies the normalisation stored in the model\n"
           "  -o F        output .npy, float32 [N, outputs] (logits)\n");
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {{"input", required_argument, 0, 'i'},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *inp = NULL, *outp = NULL;
    struct efc_model *m = NULL;
    struct efc_exec *e = NULL;
    struct efc_exec_opts eo = {.max_batch = 64};
    enum efc_dtype dt;
    int32_t ndim, dims[4], per, n_out, n;
    void *raw = NULL;
    float *x = NULL, *y = NULL;
    size_t total = 1;
    int c, rc = 1;
    enum efc_status st;

    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:h", opts, NULL)) != -1) {
        if (c == 'i')
            inp = optarg;
        else if (c == 'o')
            outp = optarg;
        else if (c == 'h') {
            help();
            return 0;
        } else
            return cli_usage_error("run", "bad option");
    }
    if (optind + 1 != argc || !inp || !outp)
        return cli_usage_error("run", "need a model file, --input and -o");
    if ((st = cli_load_model(argv[optind], &m)) || (st = efc_exec_new(m, &eo, &e)) ||
        (st = efc_npy_read(inp, &dt, &ndim, dims, &raw, (size_t)1 << 31)))
        goto fail;
    per = efc_exec_input_size(e);
    n_out = efc_exec_output_size(e);
    for (int32_t i = 0; i < ndim; i++)
        total *= (size_t)dims[i];
    if (total == 0 || total % (size_t)per) {
        st = efc_errf(EFC_EINVAL, "%s: %zu values are not a whole number of samples of %d", inp,
                      total, per);
        goto fail;
    }
    n = (int32_t)(total / (size_t)per);
    x = efc_malloc(total * sizeof(float));
    y = efc_malloc((size_t)n * (size_t)n_out * sizeof(float));
    if (!x || !y) {
        st = efc_errf(EFC_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < total; i++)
        x[i] = dt == EFC_DTYPE_U8 ? (float)((uint8_t *)raw)[i] : ((float *)raw)[i];
    for (int32_t i0 = 0; i0 < n; i0 += eo.max_batch) {
        int32_t nb = n - i0 < eo.max_batch ? n - i0 : eo.max_batch;
        const float *o;
        if ((st = efc_exec_run(e, x + (size_t)i0 * (size_t)per, nb, &o)))
            goto fail;
        memcpy(y + (size_t)i0 * (size_t)n_out, o, (size_t)nb * (size_t)n_out * sizeof(float));
    }
    {
        int32_t od[2] = {n, n_out};
        if ((st = efc_npy_write(outp, EFC_DTYPE_F32, 2, od, y)))
            goto fail;
    }
    printf("%d samples -> %s [%d, %d]\n", n, outp, n, n_out);
    rc = 0;
    goto out;
fail:
    rc = cli_fail("run", st);
out:
    efc_free(raw);
    efc_free(x);
    efc_free(y);
    efc_exec_free(e);
    efc_model_free(m);
    return rc;
}
