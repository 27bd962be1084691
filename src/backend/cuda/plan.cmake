# The VRAM planner and `krasis plan`: plain C arithmetic, part of every build (a CPU-only machine can plan
# for a GPU it does not have). Included from the top CMakeLists.txt whether or not CUDA was found.
list(APPEND KRASIS_MODULE_SOURCES ${PROJECT_SOURCE_DIR}/src/backend/cuda/vram_plan.c)
list(APPEND KRASIS_CLI_SOURCES ${PROJECT_SOURCE_DIR}/src/cli/cmd_plan.c)
list(APPEND KRASIS_CLI_SOURCES ${PROJECT_SOURCE_DIR}/src/cli/check_gpu.c)
