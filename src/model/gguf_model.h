/* Running a model straight from a GGUF file (or split set): hyper-parameters from the metadata
 * (gguf_config.c) and tensor binding by llama.cpp's tensor names (gguf_bind.c). The family files ask
 * for tensors by their Hugging Face names; kr_bind_matrix / kr_bind_vector translate them here
 * (model.layers.3.self_attn.q_a_proj.weight -> blk.3.attn_q_a.weight, experts.E.gate_proj -> slice E
 * of blk.N.ffn_gate_exps), so the layer graph is one code path for both formats. */
#ifndef KR_MODEL_GGUF_MODEL_H
#define KR_MODEL_GGUF_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "weights/gguf_set.h"

/* hparams from the set's metadata (architectures deepseek2, qwen3moe, glm4moe). A required key that is
 * missing is an error naming the file and the key. On failure nothing is left to free. */
kr_status kr_hparams_from_gguf(const kr_gguf_set *set, kr_hparams *hp);

/* Same contracts as kr_bind_matrix / kr_bind_vector / kr_model_has, for a model opened from GGUF. */
kr_status kr_gguf_bind_matrix(kr_model *m, const char *hf_name, int64_t rows, int64_t cols, kr_matrix *out);
kr_status kr_gguf_bind_vector(kr_model *m, const char *hf_name, int64_t n, float **out);
bool kr_gguf_model_has(const kr_model *m, const char *hf_name);

/* Binds the GGUF tensor `name` whose ggml dims must be exactly ne[0..n_dims) as a [rows, ne[0]] matrix
 * (rows = the product of the other dims): attn_k_b {Dn, C, H} is read as H*C rows of Dn. */
kr_status kr_gguf_bind_tensor(kr_model *m, const char *name, int n_dims, const int64_t *ne, kr_matrix *out);
bool kr_gguf_has_tensor(const kr_model *m, const char *name);

/* The QuantConfig that follows the file (gguf_quant.c): routed / shared experts left at 0 bits in qc get
 * the layout their ggml types map to (Q4_0 -> INT4 g32, Q8_0 -> INT8 g32, other block types -> INT8,
 * floats stay float); group size 32 unless qc->group_size_given. Prints the mapping per projection kind. */
kr_status kr_gguf_quant_plan(const kr_model *m, const kr_quant_config *qc, kr_quant_config *out);

#endif
