/* efc_policy.c — recursive-descent parser and canonical printer for policy strings. */
#include "common/efc_policy.h"

#include <stdio.h>
#include <string.h>

struct parser {
    const char *s; /* the whole policy, for messages */
    size_t pos;    /* 0-based; columns in messages are pos + 1 */
};

static int is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_name_char(char c)
{
    return is_lower(c) || is_digit(c) || c == '_';
}

static int is_value_char(char c)
{
    return is_name_char(c) || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '/' ||
           c == ':';
}

/* Describe the character at p->pos for a message: 'x', "end of policy", or a byte code. */
static void describe(const struct parser *p, char *buf, size_t n)
{
    unsigned char c = (unsigned char)p->s[p->pos];
    if (!c)
        snprintf(buf, n, "end of policy");
    else if (c == ' ' || c == '\t')
        snprintf(buf, n, "white space");
    else if (c > 32 && c < 127)
        snprintf(buf, n, "'%c'", c);
    else
        snprintf(buf, n, "byte 0x%02x", c);
}

static enum efc_status fail(const struct parser *p, const char *why)
{
    char got[32];
    describe(p, got, sizeof(got));
    return efc_errf(EFC_EINVAL, "policy '%.*s' at column %zu: %s, got %s",
                    EFC_POLICY_STR_MAX, p->s, p->pos + 1, why, got);
}

/* Exact form the issue asks for when a closing token is missing at the end. */
static enum efc_status fail_expected(const struct parser *p, const char *what)
{
    if (!p->s[p->pos])
        return efc_errf(EFC_EINVAL, "policy '%.*s' at column %zu: expected %s",
                        EFC_POLICY_STR_MAX, p->s, p->pos + 1, what);
    char why[64];
    snprintf(why, sizeof(why), "expected %s", what);
    return fail(p, why);
}

/* name := [a-z][a-z0-9_]* into out (EFC_POLICY_NAME_MAX). what: "method" or "key". */
static enum efc_status parse_name(struct parser *p, const char *what, char *out)
{
    size_t start = p->pos, len;
    char why[64];

    if (!is_lower(p->s[p->pos])) {
        snprintf(why, sizeof(why), "expected a %s name ([a-z][a-z0-9_]*)", what);
        return fail(p, why);
    }
    while (is_name_char(p->s[p->pos]))
        p->pos++;
    len = p->pos - start;
    if (len >= EFC_POLICY_NAME_MAX) {
        p->pos = start;
        return efc_errf(EFC_EINVAL,
                        "policy '%.*s' at column %zu: %s name longer than %d characters",
                        EFC_POLICY_STR_MAX, p->s, start + 1, what, EFC_POLICY_NAME_MAX - 1);
    }
    memcpy(out, p->s + start, len);
    out[len] = '\0';
    return EFC_OK;
}

static enum efc_status parse_value(struct parser *p, const char *key, char *out)
{
    size_t start = p->pos, len;
    char why[96];

    while (is_value_char(p->s[p->pos]))
        p->pos++;
    len = p->pos - start;
    if (len == 0) {
        snprintf(why, sizeof(why), "expected a value for '%s'", key);
        return fail(p, why);
    }
    if (len >= EFC_POLICY_VALUE_MAX)
        return efc_errf(EFC_EINVAL,
                        "policy '%.*s' at column %zu: value of '%s' longer than %d characters",
                        EFC_POLICY_STR_MAX, p->s, start + 1, key, EFC_POLICY_VALUE_MAX - 1);
    memcpy(out, p->s + start, len);
    out[len] = '\0';
    return EFC_OK;
}

static enum efc_status parse_step(struct parser *p, struct efc_policy_step *st)
{
    enum efc_status rc;

    if ((rc = parse_name(p, "method", st->method)))
        return rc;
    if (p->s[p->pos] != '(')
        return EFC_OK;
    p->pos++;
    for (;;) {
        struct efc_policy_param *kv;
        size_t key_col = p->pos;
        if (st->n_params == EFC_POLICY_MAX_PARAMS)
            return efc_errf(EFC_EINVAL,
                            "policy '%.*s' at column %zu: more than %d parameters in step '%s'",
                            EFC_POLICY_STR_MAX, p->s, key_col + 1, EFC_POLICY_MAX_PARAMS,
                            st->method);
        kv = &st->params[st->n_params];
        if ((rc = parse_name(p, "key", kv->key)))
            return rc;
        for (int32_t i = 0; i < st->n_params; i++)
            if (!strcmp(st->params[i].key, kv->key))
                return efc_errf(EFC_EINVAL,
                                "policy '%.*s' at column %zu: key '%s' repeated in step '%s'",
                                EFC_POLICY_STR_MAX, p->s, key_col + 1, kv->key, st->method);
        if (p->s[p->pos] != '=')
            return fail_expected(p, "'='");
        p->pos++;
        if ((rc = parse_value(p, kv->key, kv->value)))
            return rc;
        st->n_params++;
        if (p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos] == ')') {
            p->pos++;
            return EFC_OK;
        }
        return fail_expected(p, "')'");
    }
}

enum efc_status efc_policy_parse(const char *s, struct efc_policy *out)
{
    struct parser p = {s, 0};
    enum efc_status rc = EFC_OK;

    if (!out)
        return efc_errf(EFC_EINVAL, "policy: no output");
    memset(out, 0, sizeof(*out));
    if (!s || !s[0])
        return efc_errf(EFC_EINVAL, "policy is empty (expected e.g. 'fp32')");
    if (strnlen(s, EFC_POLICY_STR_MAX) >= EFC_POLICY_STR_MAX)
        return efc_errf(EFC_EINVAL, "policy '%.40s...' is longer than %d characters", s,
                        EFC_POLICY_STR_MAX - 1);
    for (;;) {
        if (out->n_steps == EFC_POLICY_MAX_STEPS) {
            rc = efc_errf(EFC_EINVAL, "policy '%s' at column %zu: more than %d steps", s,
                          p.pos + 1, EFC_POLICY_MAX_STEPS);
            break;
        }
        if ((rc = parse_step(&p, &out->steps[out->n_steps])))
            break;
        out->n_steps++;
        if (!s[p.pos])
            break;
        if (s[p.pos] != '+') {
            rc = fail(&p, out->steps[out->n_steps - 1].n_params
                              ? "expected '+' or the end of the policy"
                              : "expected '(', '+' or the end of the policy");
            break;
        }
        p.pos++;
    }
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* Append text to out at *len; EFC_EINVAL when it does not fit. */
static enum efc_status put(char *out, size_t out_len, size_t *len, const char *text)
{
    size_t n = strlen(text);
    if (*len + n + 1 > out_len)
        return efc_errf(EFC_EINVAL, "policy: formatted text longer than %zu bytes", out_len);
    memcpy(out + *len, text, n + 1);
    *len += n;
    return EFC_OK;
}

enum efc_status efc_policy_format(const struct efc_policy *p, char *out, size_t out_len)
{
    size_t len = 0;
    enum efc_status rc;

    if (!p || !out || out_len == 0)
        return efc_errf(EFC_EINVAL, "policy format: bad arguments");
    out[0] = '\0';
    if (p->n_steps < 1 || p->n_steps > EFC_POLICY_MAX_STEPS)
        return efc_errf(EFC_EINVAL, "policy format: %d steps (1..%d)", p->n_steps,
                        EFC_POLICY_MAX_STEPS);
    for (int32_t i = 0; i < p->n_steps; i++) {
        const struct efc_policy_step *st = &p->steps[i];
        if (!st->method[0] || st->n_params < 0 || st->n_params > EFC_POLICY_MAX_PARAMS)
            return efc_errf(EFC_EINVAL, "policy format: step %d is malformed", i);
        if ((i && (rc = put(out, out_len, &len, "+"))) ||
            (rc = put(out, out_len, &len, st->method)))
            return rc;
        for (int32_t k = 0; k < st->n_params; k++) {
            if ((rc = put(out, out_len, &len, k ? "," : "(")) ||
                (rc = put(out, out_len, &len, st->params[k].key)) ||
                (rc = put(out, out_len, &len, "=")) ||
                (rc = put(out, out_len, &len, st->params[k].value)))
                return rc;
        }
        if (st->n_params && (rc = put(out, out_len, &len, ")")))
            return rc;
    }
    return EFC_OK;
}

const char *efc_policy_get(const struct efc_policy_step *st, const char *key)
{
    if (!st || !key)
        return NULL;
    for (int32_t i = 0; i < st->n_params && i < EFC_POLICY_MAX_PARAMS; i++)
        if (!strcmp(st->params[i].key, key))
            return st->params[i].value;
    return NULL;
}
