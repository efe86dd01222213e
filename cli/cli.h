/* cli.h — shared pieces of the `efc` command-line tool (private to cli/). */
#ifndef EFC_CLI_CLI_H
#define EFC_CLI_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "common/efc_status.h"
#include "compress/compress.h"
#include "model/dataset.h"
#include "model/model.h"

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench_kernels(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_unpack(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_candidates(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_sign(int argc, char **argv);
int cmd_verify(int argc, char **argv);

/* Print "efc <cmd>: error: <STATUS>: <detail>" to stderr; returns the exit code (1). */
int cli_fail(const char *cmd, enum efc_status st);
/* Print a usage error to stderr and return 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Write s as a JSON string literal (quoted, escaped). */
void cli_json_str(FILE *f, const char *s);
/* Load a model file, printing a clear error on failure. */
enum efc_status cli_load_model(const char *path, struct efc_model **out);
/* Open a data set spec for a split. */
enum efc_status cli_open_data(const char *spec, const char *split, struct efc_dataset **out);
/* The data of a command that runs training steps: the train split of spec (required) and
 * its test split (optional: NULL when absent) set in co, and co->base_dir = the directory of
 * model_path (dir: caller storage). */
enum efc_status cli_compress_data(const char *spec, const char *model_path,
                                  struct efc_compress_opts *co, struct efc_dataset **train,
                                  struct efc_dataset **test, char *dir, size_t dir_len);
/* Process peak RSS in bytes. */
uint64_t cli_peak_rss_bytes(void);
/* The ISA level in use and the OpenBLAS core, for reports. */
const char *cli_isa_name(void);
const char *cli_blas_core(void);

#define CLI_VERSION "0.1.0"

#endif
