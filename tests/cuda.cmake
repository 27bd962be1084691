# Tests of the CUDA backend: each exits 77 ("no CUDA device") where there is no GPU, as in CI.
foreach(t test_cuda_ops test_cuda_gemm test_cuda_router test_cuda_attention test_gpu_forward test_gpu_pp)
  krasis_test(${t})
  set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77 LABELS cuda)
endforeach()
