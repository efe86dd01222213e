/* test_agent_profile.c — hardware class naming under ISA caps, and the profile of this
 * machine (agent/profile.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/agent.h"

static void test_class_names(void **state)
{
    (void)state;
    assert_string_equal(efc_agent_hw_class(EFC_ISA_REF), "generic-ref");
    assert_string_equal(efc_agent_hw_class(EFC_ISA_AVX2), "x86_64-avx2");
    assert_string_equal(efc_agent_hw_class(EFC_ISA_AVX512), "x86_64-avx512");
    assert_string_equal(efc_agent_hw_class(EFC_ISA_AVX512VNNI), "x86_64-avx512vnni");
    assert_string_equal(efc_agent_hw_class(EFC_ISA_AMX), "x86_64-amx");
    assert_string_equal(efc_agent_hw_class(EFC_ISA_NEON), "aarch64-neon");
    /* a cap lowers the class, never raises it */
    assert_string_equal(efc_agent_hw_class(efc_isa_cap(EFC_ISA_AVX512VNNI, EFC_ISA_AVX2)),
                        "x86_64-avx2");
    assert_string_equal(efc_agent_hw_class(efc_isa_cap(EFC_ISA_AVX512VNNI, EFC_ISA_REF)),
                        "generic-ref");
    assert_string_equal(efc_agent_hw_class(efc_isa_cap(EFC_ISA_AVX2, EFC_ISA_AVX512VNNI)),
                        "x86_64-avx2");
    assert_string_equal(efc_agent_hw_class(efc_isa_cap(EFC_ISA_NEON, EFC_ISA_REF)),
                        "generic-ref");
}

static void test_detect(void **state)
{
    struct efc_agent_profile p;
    struct efc_proto_status st;
    static const enum efc_isa caps[] = {EFC_ISA_REF, EFC_ISA_AVX2, EFC_ISA_AVX512VNNI,
                                        EFC_ISA_AMX};
    (void)state;
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        assert_int_equal(efc_agent_profile_detect(caps[i], &p), EFC_OK);
        assert_true(p.arch[0] != '\0');
        assert_true(p.cores >= 1);
        assert_true(p.mem_bytes >= (uint64_t)64 << 20);
        assert_true(p.isa_best == efc_isa_best());
        assert_int_equal(p.isa, efc_isa_cap(p.isa_best, caps[i]));
        assert_string_equal(p.hw_class, efc_agent_hw_class(p.isa));
        assert_true(p.blas_core[0] != '\0');
        if (p.isa_best >= EFC_ISA_AVX2 && p.isa_best < EFC_ISA_NEON) {
            assert_string_equal(p.arch, "x86_64");
            assert_non_null(strstr(p.features, "avx2"));
        }
        if (caps[i] == EFC_ISA_REF)
            assert_string_equal(p.hw_class, "generic-ref");
        if (caps[i] == EFC_ISA_AVX2 && p.isa_best >= EFC_ISA_AVX2 && p.isa_best < EFC_ISA_NEON)
            assert_string_equal(p.hw_class, "x86_64-avx2");
        memset(&st, 0, sizeof(st));
        efc_agent_profile_to_status(&p, &st);
        assert_int_equal(st.version, EFC_PROTO_VERSION);
        assert_string_equal(st.hw_class, p.hw_class);
        assert_string_equal(st.isa, efc_isa_name(p.isa));
        assert_int_equal(st.cores, p.cores);
        assert_true(st.mem_bytes == p.mem_bytes);
        assert_string_equal(st.agent_version, EFC_AGENT_VERSION);
    }
    print_message("%s %s, %d cores, %llu MiB, L1d %llu L2 %llu L3 %llu KiB, class %s, "
                  "features: %s\n",
                  p.arch, p.cpu, p.cores, (unsigned long long)(p.mem_bytes >> 20),
                  (unsigned long long)(p.l1d_bytes >> 10), (unsigned long long)(p.l2_bytes >> 10),
                  (unsigned long long)(p.l3_bytes >> 10), p.hw_class, p.features);
    assert_int_equal(efc_agent_profile_detect(EFC_ISA_AVX2, NULL), EFC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_names),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
