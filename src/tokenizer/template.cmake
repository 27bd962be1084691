# Chat templates (a Jinja2 subset): the library part and the `krasis template` command.
list(APPEND KRASIS_MODULE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/template.c
  ${CMAKE_CURRENT_LIST_DIR}/template_value.c
  ${CMAKE_CURRENT_LIST_DIR}/template_eval.c
  ${CMAKE_CURRENT_LIST_DIR}/template_builtins.c)
list(APPEND KRASIS_CLI_SOURCES ${CMAKE_CURRENT_LIST_DIR}/../cli/cmd_template.c)
