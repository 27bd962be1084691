/* The quantization flags every model-running command accepts (run, chat, perplexity, logits, bench):
 * --expert-bits 4|8  --shared-bits  --dense-bits  --lm-head-bits  --group-size G  --quant-config FILE
 * --cache-dir DIR  --threads N, and where the forward runs: --gpu --kv-dtype --expert-mode --vram --pp --gpus. */
#ifndef KR_CLI_QUANT_OPTIONS_H
#define KR_CLI_QUANT_OPTIONS_H

#include "model/model.h"

#define KR_QUANT_USAGE                                                                                      \
    "  --expert-bits 4|8    quantize routed experts (cache file built once)  --group-size 32|64|128 (128)\n" \
    "  --shared-bits, --attention-bits, --dense-bits, --lm-head-bits 4|8  quantize those too\n"             \
    "  --quant-config FILE.json  the same as a file\n"                                                       \
    "  --cache-dir DIR      expert cache location (default ~/.cache/krasis/<model>)  --threads N\n" \
    "  --prefill-chunk N    prompt tokens per pass through the layers (CPU 1024, GPU 4096)\n" \
    "  --gpu                run every non-expert op on the GPU (CUDA builds)  --kv-dtype bf16|fp8 (bf16)\n" \
    "  --expert-mode auto|cpu|persistent|grouped:N|chunked  routed experts in VRAM for prefill (auto: the\n" \
    "                       fastest that fits; persistent: decode on the GPU too) or on the CPU\n" \
    "  --vram SIZE          cap the VRAM krasis uses, e.g. 16G (with --pp: on each GPU)\n" \
    "  --pp N, --gpus 0,1   pipeline stages over several GPUs (the layers split by memory; a device may\n" \
    "                       repeat); KRASIS_PP_BOUNCE=1 hands off through pinned host memory\n"

/* If argv[*i] is a quantization flag, consumes it (and its value), sets qc and returns 1; returns 0 when
 * it is not one, and 2 after printing an error for a bad value. */
int kr_quant_flag(int argc, char **argv, int *i, kr_quant_config *qc);
/* qc defaults: nothing quantized, group size 128, default cache dir, all physical cores. */
void kr_quant_defaults(kr_quant_config *qc);

#endif
