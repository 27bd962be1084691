# Chat templates: renders against the jinja2 fixtures, and `krasis template` driven as a user would.
krasis_test(test_template)
add_executable(test_template_cli test_template_cli.c)
target_link_libraries(test_template_cli PRIVATE krasis_core)
target_compile_definitions(test_template_cli PRIVATE KRASIS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_test(NAME test_template_cli COMMAND test_template_cli $<TARGET_FILE:krasis>)
