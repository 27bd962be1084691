# GGUF models: split sets, hparams from metadata, binding by llama.cpp names, requantization mapping.
list(APPEND KRASIS_MODULE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/../weights/gguf_set.c
  ${CMAKE_CURRENT_LIST_DIR}/gguf_config.c
  ${CMAKE_CURRENT_LIST_DIR}/gguf_bind.c
  ${CMAKE_CURRENT_LIST_DIR}/gguf_quant.c
  ${CMAKE_CURRENT_LIST_DIR}/../weights/ggml_requant.c
)
