/* krasis public C API: what the CLI and the server use and what an embedder links (libkrasis_core).
 *
 *   kr_model *m;      kr_model_open("path/to/hf-model-dir", &m)      -- config.json + safetensors
 *   kr_kv_cache *kv;  kr_kv_cache_create(m, &kv)
 *   kr_forward(m, kv, ids, n, all_positions, logits)                 -- prefill or one decode step
 *   kr_kv_cache_free(kv); kr_model_close(m);
 *
 * Every call that can fail returns kr_status; kr_error() then holds a message naming the file, field or
 * parameter at fault. The model's hyper-parameters are in m->hp (model/config.h). */
#ifndef KRASIS_H
#define KRASIS_H

#include "base/status.h"
#include "model/config.h"
#include "model/model.h"

#endif
