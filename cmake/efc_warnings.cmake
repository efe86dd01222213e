# Warnings, -Werror and sanitizers for every efc target (STYLE.md 2.3).
add_compile_options(-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
                    -Wformat=2 -Wvla -Wundef -fno-strict-aliasing)
if(EFC_WERROR)
  add_compile_options(-Werror)
endif()
if(EFC_SANITIZE)
  add_compile_options(-fsanitize=${EFC_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${EFC_SANITIZE} -fno-sanitize-recover=all)
endif()
if(EFC_FUZZ)
  # -fno-sanitize-recover: a UBSan finding stops the run like an ASan one (not just a print)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
