/* efc_config.h — one option table per program (STYLE.md 2.9): parse, validate, --help,
 * --print-config and the docs all come from it.
 *
 * Precedence, lowest first: the table's defaults, the file given by `--config FILE`
 * (`key = value` lines; `#` starts a comment at the start of a line or after whitespace; keys
 * as in the table, with '-' or '_'), environment
 * variables EFC_<NAME> (upper case, '-' -> '_'; empty = unset), then the command line
 * (`--name value` or `--name=value`). An unknown key or option, or a value of the wrong type or
 * out of range, fails with a detail naming where it came from ("agent.conf:7: job-timeout:
 * ...", "env EFC_RUNS: ...", "--runs: ..."). Arguments that do not start with "--" are
 * positionals (a subcommand), returned in order.
 */
#ifndef EFC_COMMON_CONFIG_H
#define EFC_COMMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/efc_status.h"

enum efc_cfg_type {
    EFC_CFG_STR,  /* const char * (points into argv, the environment or the loader) */
    EFC_CFG_INT,  /* int64_t in [min, max] */
    EFC_CFG_F64,  /* double in [min, max] */
    EFC_CFG_ENUM, /* int64_t: index of the value in choices ("bytes|p50") */
};

struct efc_cfg_opt {
    const char *name; /* "job-timeout": --job-timeout, key job-timeout, env EFC_JOB_TIMEOUT */
    enum efc_cfg_type type;
    const char *def; /* default, written as in a file; NULL: unset (STR: NULL pointer) */
    double min, max;
    const char *choices;
    size_t offset; /* of the field in the caller's options struct */
    const char *help;
};

#define EFC_CFG_POS_MAX 8

struct efc_config; /* the loaded result: provenance, positionals, string storage */

/* Load opts (the caller's struct, laid out as the table says) from defaults, file, environment
 * and argv. *out (free with efc_config_free, after the last use of a string option) is set on
 * EFC_OK. Errors: EFC_EINVAL (detail as above), EFC_ENOTFOUND / EFC_EIO (the config file),
 * EFC_ENOMEM. `--help` and `--print-config` take no value and are only recorded. */
enum efc_status efc_config_load(const struct efc_cfg_opt *t, size_t n, void *opts, int argc,
                                char **argv, struct efc_config **out);
void efc_config_free(struct efc_config *c);

int efc_config_help(const struct efc_config *c);         /* --help / -h given */
int efc_config_print_wanted(const struct efc_config *c); /* --print-config given */
int efc_config_npos(const struct efc_config *c);
const char *efc_config_pos(const struct efc_config *c, int i);
/* 1 if the option was set by a file, the environment or the command line (not a default). */
int efc_config_given(const struct efc_config *c, const char *name);

/* Every option as a config file would set it, with where its value came from:
 * "job-timeout = 120    # default". Unset options are commented out. */
void efc_config_print(const struct efc_cfg_opt *t, size_t n, const void *opts,
                      const struct efc_config *c, FILE *f);
/* One line per option: --name VALUE, the range / choices, the default and the help. */
void efc_config_usage(const struct efc_cfg_opt *t, size_t n, FILE *f);

#endif
