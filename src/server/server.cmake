# The OpenAI-compatible server (`krasis serve`): libmicrohttpd for HTTP, jansson for JSON.
# The top CMakeLists.txt includes this after add_library(krasis_core), so the library is linked here;
# checked, so that a reordering fails loudly rather than silently.
if(NOT TARGET krasis_core)
  message(FATAL_ERROR "src/server/server.cmake must be included after add_library(krasis_core)")
endif()
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
find_package(Threads REQUIRED)
list(APPEND KRASIS_MODULE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/openai.c
  ${CMAKE_CURRENT_LIST_DIR}/reasoning.c
  ${CMAKE_CURRENT_LIST_DIR}/queue.c
  ${CMAKE_CURRENT_LIST_DIR}/metrics.c
  ${CMAKE_CURRENT_LIST_DIR}/engine.c
  ${CMAKE_CURRENT_LIST_DIR}/server.c)
list(APPEND KRASIS_CLI_SOURCES ${CMAKE_CURRENT_LIST_DIR}/../cli/cmd_serve.c)
target_link_libraries(krasis_core PUBLIC PkgConfig::MHD Threads::Threads)
