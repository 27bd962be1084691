# The CUDA backend (src/backend/cuda): a static library of .cu kernels and their host glue, built only
# when nvcc was found (KRASIS_HAVE_CUDA). Included from the top CMakeLists.txt, which enabled CUDA and
# chose the architectures; a CPU-only build never reads this file.
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

set(KR_CUDA ${PROJECT_SOURCE_DIR}/src/backend/cuda)
add_library(krasis_cuda STATIC
  ${KR_CUDA}/backend.cu
  ${KR_CUDA}/ops.cu
  ${KR_CUDA}/gemm.cu
  ${KR_CUDA}/router.cu
  ${KR_CUDA}/kvcache.cu
  ${KR_CUDA}/attention.cu
  ${KR_CUDA}/attention_flash.cu
)
target_include_directories(krasis_cuda PUBLIC ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/include)
# The directory's flags (-Wall, -fsanitize=...) are for the C compiler; nvcc gets its own list.
set_property(TARGET krasis_cuda PROPERTY COMPILE_OPTIONS "")
# no fast-math: the kernels are checked against the float32 CPU reference (expf, cosf, sqrtf as written)
target_compile_options(krasis_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall --expt-relaxed-constexpr -lineinfo>)
# whole-program compilation (no -rdc): no device-link step, which would drag krasis_core into nvlink
set_target_properties(krasis_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_RESOLVE_DEVICE_SYMBOLS OFF)
target_link_libraries(krasis_cuda PUBLIC CUDA::cudart_static CUDA::cublasLt)
# the GPU forward pass: plain C host code over the library's API (model.c calls it when kr_model.gpu is set)
target_sources(krasis_core PRIVATE ${PROJECT_SOURCE_DIR}/src/model/gpu_model.c ${PROJECT_SOURCE_DIR}/src/model/gpu_weights.c
  ${PROJECT_SOURCE_DIR}/src/model/gpu_kv.c ${PROJECT_SOURCE_DIR}/src/model/gpu_forward.c)
target_compile_definitions(krasis_cuda PUBLIC KRASIS_HAVE_CUDA=1)
# the two static libraries need each other (kr_fail lives in krasis_core); CMake repeats them on link lines
target_link_libraries(krasis_cuda PRIVATE krasis_core)
target_link_libraries(krasis_core PUBLIC krasis_cuda)

# GPU attention benchmark (scripts/device/run.sh runs it on the device machine)
add_executable(krasis_cuda_attention_bench ${PROJECT_SOURCE_DIR}/bench/cuda_attention_bench.c)
target_link_libraries(krasis_cuda_attention_bench PRIVATE krasis_core)

include(${CMAKE_CURRENT_LIST_DIR}/moe.cmake OPTIONAL)
