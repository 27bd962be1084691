# Tokenizers (tokenizer.json BPE, tiktoken, GGUF vocab) and the GGUF metadata reader they use.
list(APPEND KRASIS_MODULE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/tok_hf.c
  ${CMAKE_CURRENT_LIST_DIR}/tok_vocab.c
  ${CMAKE_CURRENT_LIST_DIR}/../weights/gguf.c
)
list(APPEND KRASIS_CLI_SOURCES ${CMAKE_CURRENT_LIST_DIR}/../cli/cmd_tokenize.c)

# Encoding throughput (a program that prints MB/s and tokens/s, not a test).
add_executable(tokenizer_bench ${CMAKE_CURRENT_LIST_DIR}/../../bench/tokenizer_bench.c)
target_link_libraries(tokenizer_bench PRIVATE krasis_core)
target_compile_definitions(tokenizer_bench PRIVATE KRASIS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
