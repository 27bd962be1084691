# GPU MoE (issue 9): the GPU expert layout packer (plain C, so any build can write the GPU cache),
# the grouped INT4/INT8 GEMM kernels, their tests and the micro-benchmark. Included from cuda.cmake,
# so only when nvcc was found; KR_CUDA is set there.
# (moe_layout.c, moe_cache.c, expert_mode.c are plain C in every build: plan.cmake)
target_sources(krasis_cuda PRIVATE ${KR_CUDA}/moe_gemm.cu ${KR_CUDA}/moe_residency.cu)

# Tests are declared here (this file is read before tests/ is): the layout test runs anywhere, the
# kernel test needs a GPU and exits 77 without one.
foreach(t test_moe_layout test_moe_gpu test_moe_residency)
  add_executable(${t} ${PROJECT_SOURCE_DIR}/tests/${t}.c)
  target_link_libraries(${t} PRIVATE krasis_core)
  target_compile_definitions(${t} PRIVATE KRASIS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  add_test(NAME ${t} COMMAND ${t} --quick)
endforeach()
set_tests_properties(test_moe_gpu test_moe_residency PROPERTIES SKIP_RETURN_CODE 77 LABELS cuda)

# Not a test: prints timings (scripts/device/run_moe.sh runs it on the device machine).
add_executable(gpu_moe_bench ${PROJECT_SOURCE_DIR}/bench/gpu_moe_bench.c)
target_link_libraries(gpu_moe_bench PRIVATE krasis_core CUDA::cublas)
# Expert residency modes over all MoE layers (scripts/device/run_residency.sh runs it there).
add_executable(gpu_experts_bench ${PROJECT_SOURCE_DIR}/bench/gpu_experts_bench.c)
target_link_libraries(gpu_experts_bench PRIVATE krasis_core)
