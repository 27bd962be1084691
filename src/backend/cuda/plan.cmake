# The VRAM planner and `krasis plan`: plain C arithmetic, part of every build (a CPU-only machine can plan
# for a GPU it does not have). Included from the top CMakeLists.txt whether or not CUDA was found.
list(APPEND KRASIS_MODULE_SOURCES ${PROJECT_SOURCE_DIR}/src/backend/cuda/vram_plan.c)
list(APPEND KRASIS_CLI_SOURCES ${PROJECT_SOURCE_DIR}/src/cli/cmd_plan.c)
list(APPEND KRASIS_CLI_SOURCES ${PROJECT_SOURCE_DIR}/src/cli/check_gpu.c)
# The GPU expert layout packer, the GPU expert cache file and the --expert-mode values: plain C too, so a
# CPU-only build can write and check experts_marlin_*.bin (issue 9).
list(APPEND KRASIS_MODULE_SOURCES ${PROJECT_SOURCE_DIR}/src/backend/cuda/moe_layout.c
  ${PROJECT_SOURCE_DIR}/src/backend/cuda/moe_cache.c ${PROJECT_SOURCE_DIR}/src/backend/cuda/expert_mode.c)
