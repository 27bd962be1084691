# CPU fast path: group quantization, ISA-dispatched kernels, thread pool, quantized MoE, expert cache,
# and the bench / check commands. Included from the top CMakeLists.txt.
include(CheckCCompilerFlag)
set(KR_CPU ${PROJECT_SOURCE_DIR}/src/backend/cpu)
list(APPEND KRASIS_MODULE_SOURCES
  ${KR_CPU}/quant.c
  ${KR_CPU}/isa.c
  ${KR_CPU}/kernels_scalar.c
  ${KR_CPU}/threadpool.c
  ${KR_CPU}/moe.c
  ${KR_CPU}/qlinear.c
  ${KR_CPU}/membw.c
  ${KR_CPU}/numa.c
  ${PROJECT_SOURCE_DIR}/src/weights/expert_cache.c
)
check_c_compiler_flag("-mavx2 -mfma" KR_CC_AVX2)
if(KR_CC_AVX2 AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  list(APPEND KRASIS_MODULE_SOURCES ${KR_CPU}/kernels_avx2.c)
  # only this file gets AVX2: the binary still starts on any x86-64, the dispatch table decides
  set_source_files_properties(${KR_CPU}/kernels_avx2.c PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma")
  set_property(SOURCE ${KR_CPU}/isa.c APPEND PROPERTY COMPILE_DEFINITIONS KRASIS_HAVE_AVX2=1)
  check_c_compiler_flag("-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni" KR_CC_AVX512)
  if(KR_CC_AVX512)
    list(APPEND KRASIS_MODULE_SOURCES ${KR_CPU}/kernels_avx512.c)
    set_source_files_properties(${KR_CPU}/kernels_avx512.c PROPERTIES COMPILE_OPTIONS
      "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx2;-mfma")
    set_property(SOURCE ${KR_CPU}/isa.c APPEND PROPERTY COMPILE_DEFINITIONS KRASIS_HAVE_AVX512=1)
  endif()
endif()
# libnuma is optional: without it (or on one node) NUMA placement is a no-op
find_library(KR_NUMA_LIB numa)
find_path(KR_NUMA_INC numa.h)
if(KR_NUMA_LIB AND KR_NUMA_INC)
  set_property(SOURCE ${KR_CPU}/numa.c APPEND PROPERTY COMPILE_DEFINITIONS KRASIS_HAVE_NUMA=1)
  target_link_libraries(krasis_core PUBLIC ${KR_NUMA_LIB})
else()
  message(STATUS "krasis: libnuma not found; NUMA placement disabled")
endif()
find_package(Threads REQUIRED)
target_link_libraries(krasis_core PUBLIC Threads::Threads)
list(APPEND KRASIS_CLI_SOURCES ${PROJECT_SOURCE_DIR}/src/cli/quant_options.c ${PROJECT_SOURCE_DIR}/src/cli/cmd_bench.c ${PROJECT_SOURCE_DIR}/src/cli/cmd_check.c)
# decode attention over a long cache, against the read-bandwidth roofline (a benchmark, not a test)
add_executable(cpu_attention_bench ${PROJECT_SOURCE_DIR}/bench/cpu_attention_bench.c)
target_link_libraries(cpu_attention_bench PRIVATE krasis_core)
