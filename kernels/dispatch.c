/* dispatch.c — fills struct efc_kernel_table once from kernels.inc (XNNPACK config style).
 *
 * Per op, the variant with the highest ISA the (capped) level can run wins; __ref always
 * qualifies, so every field is set. Written once under a mutex; readers after that see a
 * published flag (acquire) and read the table without locking.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_log.h"
#include "kernels/kernels.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static struct efc_kernel_table g_table;
static enum efc_isa g_level = EFC_ISA_REF;
static enum efc_status g_status = EFC_OK;
static atomic_int g_done;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* Can a machine at `level` run code built for `isa`? */
static int isa_runs_on(enum efc_isa isa, enum efc_isa level)
{
    if (isa == EFC_ISA_REF)
        return 1;
    if (isa == EFC_ISA_NEON || level == EFC_ISA_NEON)
        return isa == level;
    return isa <= level;
}

static int isa_valid(enum efc_isa isa)
{
    switch (isa) {
    case EFC_ISA_REF:
    case EFC_ISA_AVX2:
    case EFC_ISA_AVX512:
    case EFC_ISA_AVX512VNNI:
    case EFC_ISA_AMX:
    case EFC_ISA_NEON:
        return 1;
    }
    return 0;
}

static void fill(enum efc_isa level, enum efc_isa cap)
{
#define FIELD_ISA(op) enum efc_isa op;
#define FIELD_NAME(op) const char *op;
    struct {
        EFC_KERNEL_OPS(FIELD_ISA)
    } have;
    struct {
        EFC_KERNEL_OPS(FIELD_NAME)
    } names;
#undef FIELD_ISA
#undef FIELD_NAME
    memset(&g_table, 0, sizeof(g_table));
    memset(&have, 0, sizeof(have)); /* EFC_ISA_REF == 0 */
    memset(&names, 0, sizeof(names));

    /* Entries are in ascending ISA order per op within kernels.inc, but do not rely on it:
     * take a variant if it runs here and is not below the one already chosen. NEON vs x86
     * never compete (isa_runs_on excludes the other family). `&fn` serves both function
     * entries and struct entries (qgemm). */
#define EFC_KERNEL(op, isa, fn)                                                     \
    if (isa_runs_on(isa, level) && (g_table.op == NULL || (isa) >= have.op)) {      \
        g_table.op = &fn;                                                           \
        have.op = isa;                                                              \
        names.op = #fn;                                                             \
    }
#include "kernels/kernels.inc"
#undef EFC_KERNEL

    enum efc_isa top = EFC_ISA_REF;
#define LOG_OP(op)                                                                     \
    efc_log(EFC_LOG_DEBUG, "kernels", "%s -> %s", #op, names.op ? names.op : "(none)"); \
    if (have.op == EFC_ISA_NEON)                                                       \
        top = EFC_ISA_NEON;                                                            \
    else if (top != EFC_ISA_NEON && have.op > top)                                     \
        top = have.op;
    EFC_KERNEL_OPS(LOG_OP)
#undef LOG_OP
    efc_log(EFC_LOG_INFO, "kernels", "isa %s (cpu best %s, cap %s); best variant in the table: %s",
            efc_isa_name(level), efc_isa_name(efc_isa_best()), efc_isa_name(cap),
            efc_isa_name(top));
}

enum efc_status efc_kernels_init(enum efc_isa cap)
{
    if (atomic_load_explicit(&g_done, memory_order_acquire))
        return g_status;
    if (!isa_valid(cap))
        return efc_errf(EFC_EINVAL, "kernels: invalid ISA cap %d", (int)cap);
    pthread_mutex_lock(&g_lock);
    if (!atomic_load_explicit(&g_done, memory_order_relaxed)) {
        g_level = efc_isa_cap(efc_isa_best(), cap);
        fill(g_level, cap);
        g_status = EFC_OK;
        atomic_store_explicit(&g_done, 1, memory_order_release);
    }
    pthread_mutex_unlock(&g_lock);
    return g_status;
}

enum efc_status efc_kernels_init_env(void)
{
    enum efc_isa cap;
    enum efc_status st = efc_isa_from_env(&cap);
    return st ? st : efc_kernels_init(cap);
}

const struct efc_kernel_table *efc_kernels(void)
{
    if (!atomic_load_explicit(&g_done, memory_order_acquire)) {
        if (efc_kernels_init_env() != EFC_OK) {
            efc_log(EFC_LOG_ERROR, "kernels", "%s; using the best ISA", efc_err_detail());
            efc_kernels_init(efc_isa_best());
        }
    }
    return &g_table;
}

enum efc_isa efc_kernels_isa(void)
{
    efc_kernels();
    return g_level;
}
