# Tests of the CPU fast path (quantizers, kernels at every ISA level, thread pool, MoE, expert cache).
krasis_test(test_quant)
krasis_test(test_kernels)
krasis_test(test_kernels_alloc)
# every allocation of the test binary goes through a counter (see test_kernels_alloc.c)
target_link_options(test_kernels_alloc PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
krasis_test(test_expert_cache)
krasis_test(test_quant_model)
