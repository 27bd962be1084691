/* Expert residency modes on the GPU (DESIGN.md section 5) as values: parsing of --expert-mode and the
 * choice of a mode from sizes. Plain C (no CUDA): the CLI and `krasis plan` use it in any build, and
 * the residency (moe_residency.h) applies what it decides.
 *   persistent  every MoE layer's routed experts resident: L layer blocks;
 *   grouped:N   N layers at a time, two VRAM slots of N layers (group g+1 is copied while g computes):
 *               2 N layer blocks;
 *   chunked     grouped:1.
 * grouped:N with 2 N >= L needs at least as much VRAM as persistent and copies more: it is run as
 * persistent (kr_expert_mode_choose says so in `why`). */
#ifndef KR_BACKEND_CUDA_EXPERT_MODE_H
#define KR_BACKEND_CUDA_EXPERT_MODE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KR_EXPERTS_AUTO = 0, KR_EXPERTS_PERSISTENT, KR_EXPERTS_GROUPED, KR_EXPERTS_CHUNKED } kr_expert_mode_kind;

typedef struct {
    kr_expert_mode_kind kind;
    int group; /* layers per group: N for grouped:N, 1 for chunked, all layers for persistent, 0 for auto */
} kr_expert_mode;

/* "auto", "persistent", "grouped:N" (N >= 1), "chunked"; KR_ERR_ARG naming --expert-mode and the value. */
kr_status kr_expert_mode_parse(const char *s, kr_expert_mode *out);
/* "persistent", "grouped:4", "chunked", "auto" */
void kr_expert_mode_str(const kr_expert_mode *m, char *buf, size_t n);

/* VRAM a mode holds for experts: persistent L * layer_bytes, grouped/chunked 2 N * layer_bytes. */
int64_t kr_expert_mode_bytes(const kr_expert_mode *m, int n_layers, int64_t layer_bytes);

/* The mode to run for n_layers MoE layers of layer_bytes each with `avail` bytes of VRAM for experts
 * (what the VRAM planner leaves under --vram, or free memory). auto: persistent if it fits, else
 * grouped with the largest N whose two slots fit, else chunked; KR_ERR_ARG when not even chunked fits.
 * An explicit mode that does not fit is refused (KR_ERR_ARG with the sizes) rather than changed.
 * out->group is set for every kind; why (may be NULL) gets one line saying what was chosen and why. */
kr_status kr_expert_mode_choose(const kr_expert_mode *req, int n_layers, int64_t layer_bytes, int64_t avail,
                                kr_expert_mode *out, char *why, size_t why_n);

#ifdef __cplusplus
}
#endif

#endif
