# Tokenizer tests (real vectors in ../shared/data skip loudly when it is absent).
krasis_test(test_tokenizer_vectors)
krasis_test(test_tokenizer_reference)
krasis_test(test_tokenizer_roundtrip)
krasis_test(test_tokenizer_bad)
