# Tests of the CPU fast path (quantizers, kernels at every ISA level, thread pool, MoE, expert cache).
krasis_test(test_quant)
krasis_test(test_kernels)
# the same MoE checks with the two workers on two (pretended) NUMA nodes: per-node queues + phase 3
add_test(NAME test_kernels_numa COMMAND test_kernels)
set_tests_properties(test_kernels_numa PROPERTIES ENVIRONMENT KRASIS_FAKE_NUMA=2)
krasis_test(test_kernels_alloc)
# every allocation of these test binaries goes through a counter (tests/alloc_counter.h)
set(KR_WRAP_ALLOC -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc -Wl,--wrap=aligned_alloc
                  -Wl,--wrap=posix_memalign)
target_link_options(test_kernels_alloc PRIVATE ${KR_WRAP_ALLOC})
krasis_test(test_forward_alloc)
target_link_options(test_forward_alloc PRIVATE ${KR_WRAP_ALLOC})
krasis_test(test_kv_grow) # fails one allocation of a KV-cache growth on purpose
target_link_options(test_kv_grow PRIVATE ${KR_WRAP_ALLOC})
krasis_test(test_expert_cache)
krasis_test(test_quant_model)
target_link_options(test_quant_model PRIVATE -Wl,--wrap=kr_route) # its routing trace
