/* efc_config.c — table-driven options: defaults, file, environment, command line. */
#include "common/efc_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_parse.h"

#define NAME_MAX_ 64
#define LINE_MAX_ 4096

enum src { SRC_DEFAULT = 0, SRC_FILE, SRC_ENV, SRC_ARGV };

struct efc_config {
    const struct efc_cfg_opt *t;
    size_t n;
    enum src *src;  /* per option */
    int *file_line; /* per option, when SRC_FILE */
    char file[256];
    char **strings; /* copies of file values (the file's lines do not outlive the load) */
    size_t n_strings;
    const char *pos[EFC_CFG_POS_MAX];
    int n_pos;
    int help, print;
};

static void *field(void *opts, const struct efc_cfg_opt *o)
{
    return (char *)opts + o->offset;
}

/* "job_timeout" and "job-timeout" name the same option. */
static int name_eq(const char *a, const char *b, size_t blen)
{
    size_t i = 0;
    for (; i < blen && a[i]; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (x != y)
            return 0;
    }
    return i == blen && a[i] == '\0';
}

static int find(const struct efc_cfg_opt *t, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (name_eq(t[i].name, name, len))
            return (int)i;
    return -1;
}

/* Store text as option i's value; `where` names the source for errors. */
static enum efc_status set(const struct efc_cfg_opt *o, void *opts, const char *v,
                           const char *where)
{
    switch (o->type) {
    case EFC_CFG_STR:
        *(const char **)field(opts, o) = v;
        return EFC_OK;
    case EFC_CFG_INT: {
        int64_t x;
        if (efc_parse_i64(v, (int64_t)o->min, (int64_t)o->max, o->name, &x) != EFC_OK)
            return efc_errf(EFC_EINVAL, "%s: %s: \"%s\" is not an integer in [%lld, %lld]", where,
                            o->name, v, (long long)o->min, (long long)o->max);
        *(int64_t *)field(opts, o) = x;
        return EFC_OK;
    }
    case EFC_CFG_F64: {
        double x;
        if (efc_parse_f64(v, o->min, o->max, o->name, &x) != EFC_OK)
            return efc_errf(EFC_EINVAL, "%s: %s: \"%s\" is not a number in [%g, %g]", where,
                            o->name, v, o->min, o->max);
        *(double *)field(opts, o) = x;
        return EFC_OK;
    }
    case EFC_CFG_ENUM: {
        const char *p = o->choices;
        for (int64_t k = 0; p && *p; k++) {
            size_t len = strcspn(p, "|");
            if (strlen(v) == len && !strncmp(p, v, len)) {
                *(int64_t *)field(opts, o) = k;
                return EFC_OK;
            }
            p += len + (p[len] == '|');
        }
        return efc_errf(EFC_EINVAL, "%s: %s: \"%s\" is not one of %s", where, o->name, v,
                        o->choices);
    }
    }
    return efc_errf(EFC_EINTERNAL, "config: option %s: bad type", o->name);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static enum efc_status load_file(const struct efc_cfg_opt *t, size_t n, void *opts,
                                 struct efc_config *c, const char *path)
{
    char line[LINE_MAX_], where[300];
    enum efc_status st = EFC_OK;
    FILE *f = fopen(path, "r");
    if (!f)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "config file %s: %s", path,
                        strerror(errno));
    snprintf(c->file, sizeof(c->file), "%s", path);
    for (int ln = 1; st == EFC_OK && fgets(line, sizeof(line), f); ln++) {
        snprintf(where, sizeof(where), "%s:%d", path, ln);
        if (!strchr(line, '\n') && !feof(f)) {
            st = efc_errf(EFC_EINVAL, "%s: line longer than %d bytes", where, LINE_MAX_ - 2);
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            st = efc_errf(EFC_EINVAL, "%s: expected key = value", where);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = eq + 1;
        for (char *h = val; (h = strchr(h, '#')) != NULL; h++)
            if (h > val && isspace((unsigned char)h[-1])) {
                *h = '\0'; /* a trailing comment: whitespace, then '#' */
                break;
            }
        val = trim(val);
        int i = find(t, n, key, strlen(key));
        if (i < 0) {
            st = efc_errf(EFC_EINVAL, "%s: unknown key \"%s\"", where, key);
            break;
        }
        char *copy = efc_strdup(val);
        char **grown = efc_realloc(c->strings, (c->n_strings + 1) * sizeof(*grown));
        if (!copy || !grown) {
            efc_free(copy);
            if (grown)
                c->strings = grown;
            st = efc_errf(EFC_ENOMEM, "%s: out of memory", where);
            break;
        }
        c->strings = grown;
        c->strings[c->n_strings++] = copy;
        if ((st = set(&t[i], opts, copy, where)) == EFC_OK) {
            c->src[i] = SRC_FILE;
            c->file_line[i] = ln;
        }
    }
    fclose(f);
    return st;
}

enum efc_status efc_config_load(const struct efc_cfg_opt *t, size_t n, void *opts, int argc,
                                char **argv, struct efc_config **out)
{
    enum efc_status st = EFC_OK;
    const char *file = NULL;
    struct efc_config *c = efc_calloc(1, sizeof(*c));
    *out = NULL;
    if (!c || !(c->src = efc_calloc(n ? n : 1, sizeof(*c->src))) ||
        !(c->file_line = efc_calloc(n ? n : 1, sizeof(*c->file_line)))) {
        efc_config_free(c);
        return efc_errf(EFC_ENOMEM, "config: out of memory");
    }
    c->t = t;
    c->n = n;
    /* 1. defaults */
    for (size_t i = 0; i < n && st == EFC_OK; i++)
        if (t[i].def)
            st = set(&t[i], opts, t[i].def, "default");
        else if (t[i].type == EFC_CFG_STR)
            *(const char **)field(opts, &t[i]) = NULL;
    /* 2. the file (--config anywhere on the command line) */
    for (int a = 1; a < argc && st == EFC_OK; a++) {
        if (!strcmp(argv[a], "--config")) {
            if (a + 1 >= argc)
                st = efc_errf(EFC_EINVAL, "--config: needs a file");
            else
                file = argv[++a];
        } else if (!strncmp(argv[a], "--config=", 9)) {
            file = argv[a] + 9;
        }
    }
    if (st == EFC_OK && file)
        st = load_file(t, n, opts, c, file);
    /* 3. the environment */
    for (size_t i = 0; i < n && st == EFC_OK; i++) {
        char env[NAME_MAX_ + 8], where[NAME_MAX_ + 16];
        size_t k = (size_t)snprintf(env, sizeof(env), "EFC_");
        for (const char *p = t[i].name; *p && k + 1 < sizeof(env); p++)
            env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[k] = '\0';
        const char *v = getenv(env);
        if (!v || !*v)
            continue;
        snprintf(where, sizeof(where), "env %s", env);
        if ((st = set(&t[i], opts, v, where)) == EFC_OK)
            c->src[i] = SRC_ENV;
    }
    /* 4. the command line */
    for (int a = 1; a < argc && st == EFC_OK; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            c->help = 1;
            continue;
        }
        if (!strcmp(arg, "--print-config")) {
            c->print = 1;
            continue;
        }
        if (!strcmp(arg, "--config")) {
            a++;
            continue;
        }
        if (!strncmp(arg, "--config=", 9))
            continue;
        if (strncmp(arg, "--", 2) != 0) {
            if (c->n_pos >= EFC_CFG_POS_MAX)
                st = efc_errf(EFC_EINVAL, "unexpected argument \"%s\"", arg);
            else
                c->pos[c->n_pos++] = arg;
            continue;
        }
        const char *name = arg + 2, *eq = strchr(name, '='), *v;
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int i = find(t, n, name, len);
        if (i < 0) {
            st = efc_errf(EFC_EINVAL, "unknown option --%.*s", (int)len, name);
            break;
        }
        if (eq) {
            v = eq + 1;
        } else if (a + 1 < argc) {
            v = argv[++a];
        } else {
            st = efc_errf(EFC_EINVAL, "--%s: needs a value", t[i].name);
            break;
        }
        char where[NAME_MAX_ + 4];
        snprintf(where, sizeof(where), "--%s", t[i].name);
        if ((st = set(&t[i], opts, v, where)) == EFC_OK)
            c->src[i] = SRC_ARGV;
    }
    if (st != EFC_OK) {
        efc_config_free(c);
        return st;
    }
    *out = c;
    return EFC_OK;
}

void efc_config_free(struct efc_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_strings; i++)
        efc_free(c->strings[i]);
    efc_free(c->strings);
    efc_free(c->src);
    efc_free(c->file_line);
    efc_free(c);
}

int efc_config_help(const struct efc_config *c)
{
    return c->help;
}

int efc_config_print_wanted(const struct efc_config *c)
{
    return c->print;
}

int efc_config_npos(const struct efc_config *c)
{
    return c->n_pos;
}

const char *efc_config_pos(const struct efc_config *c, int i)
{
    return i >= 0 && i < c->n_pos ? c->pos[i] : NULL;
}

int efc_config_given(const struct efc_config *c, const char *name)
{
    int i = find(c->t, c->n, name, strlen(name));
    return i >= 0 && c->src[i] != SRC_DEFAULT;
}

/* The value of option o in opts as a file would write it; buf for numbers. */
static const char *value_text(const struct efc_cfg_opt *o, const void *opts, char *buf,
                              size_t len)
{
    const void *f = (const char *)opts + o->offset;
    switch (o->type) {
    case EFC_CFG_STR:
        return *(const char *const *)f;
    case EFC_CFG_INT:
        snprintf(buf, len, "%lld", (long long)*(const int64_t *)f);
        return buf;
    case EFC_CFG_F64:
        snprintf(buf, len, "%.17g", *(const double *)f);
        return buf;
    case EFC_CFG_ENUM: {
        const char *p = o->choices;
        int64_t k = *(const int64_t *)f;
        for (int64_t j = 0; p && *p && j < k; j++)
            p += strcspn(p, "|") + (p[strcspn(p, "|")] == '|');
        snprintf(buf, len, "%.*s", (int)strcspn(p ? p : "", "|"), p ? p : "");
        return buf;
    }
    }
    return NULL;
}

void efc_config_print(const struct efc_cfg_opt *t, size_t n, const void *opts,
                      const struct efc_config *c, FILE *f)
{
    char buf[64], from[300];
    for (size_t i = 0; i < n; i++) {
        const char *v = value_text(&t[i], opts, buf, sizeof(buf));
        switch (c->src[i]) {
        case SRC_FILE:
            snprintf(from, sizeof(from), "%s:%d", c->file, c->file_line[i]);
            break;
        case SRC_ENV:
            snprintf(from, sizeof(from), "environment");
            break;
        case SRC_ARGV:
            snprintf(from, sizeof(from), "command line");
            break;
        default:
            snprintf(from, sizeof(from), "default");
        }
        if (c->src[i] == SRC_DEFAULT && !t[i].def)
            v = NULL; /* never set: not a value */
        if (v)
            fprintf(f, "%s = %s    # %s\n", t[i].name, v, from);
        else
            fprintf(f, "# %s = (unset)\n", t[i].name);
    }
}

void efc_config_usage(const struct efc_cfg_opt *t, size_t n, FILE *f)
{
    char arg[96];
    for (size_t i = 0; i < n; i++) {
        const struct efc_cfg_opt *o = &t[i];
        switch (o->type) {
        case EFC_CFG_INT:
            snprintf(arg, sizeof(arg), "--%s N", o->name);
            break;
        case EFC_CFG_F64:
            snprintf(arg, sizeof(arg), "--%s X", o->name);
            break;
        case EFC_CFG_ENUM:
            snprintf(arg, sizeof(arg), "--%s %s", o->name, o->choices);
            break;
        default:
            snprintf(arg, sizeof(arg), "--%s S", o->name);
        }
        fprintf(f, "  %-24s %s", arg, o->help);
        if (o->type == EFC_CFG_INT)
            fprintf(f, " [%lld..%lld]", (long long)o->min, (long long)o->max);
        else if (o->type == EFC_CFG_F64)
            fprintf(f, " [%g..%g]", o->min, o->max);
        if (o->def)
            fprintf(f, " (default %s)", o->def);
        fputc('\n', f);
    }
}
