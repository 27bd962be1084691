# Server tests: the request parser in C, and `krasis serve` driven by the official openai client
# (tests/server/test_openai.py) from the venv that scripts/test.sh creates (skipped when absent).
add_executable(test_server_parse server/test_server_parse.c)
target_link_libraries(test_server_parse PRIVATE krasis_core)
target_include_directories(test_server_parse PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(test_server_parse PRIVATE KRASIS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_test(NAME test_server_parse COMMAND test_server_parse)
set(KRASIS_TEST_PYTHON "${PROJECT_SOURCE_DIR}/build/.venv/bin/python" CACHE FILEPATH
    "Python with the pinned openai package, for the server tests")
add_test(NAME test_server_openai
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/server/run_python.sh ${KRASIS_TEST_PYTHON}
          ${CMAKE_CURRENT_SOURCE_DIR}/server/test_openai.py $<TARGET_FILE:krasis>)
set_tests_properties(test_server_openai PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
if(KRASIS_SANITIZE)
  # RSS is not a leak signal under ASan (freed memory sits in its quarantine); the exit-time leak check is
  set_tests_properties(test_server_openai PROPERTIES ENVIRONMENT "KRASIS_SANITIZED=1")
endif()
