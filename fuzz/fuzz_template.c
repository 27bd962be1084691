/* Fuzzes the chat-template interpreter: any template text parses or fails with a message; a parsed
 * template renders a fixed conversation or fails with a message. Never a crash, hang or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *src = malloc(size + 1);
    memcpy(src, data, size);
    src[size] = '\0';
    kr_template *t;
    if (kr_template_parse(src, "fuzz", &t) == KR_OK) {
        json_t *ctx = json_loads("{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"},"
                                 " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi\"}]},"
                                 " {\"role\": \"assistant\", \"content\": \"ok\", \"tool_calls\": [{\"function\":"
                                 " {\"name\": \"f\", \"arguments\": {\"x\": 1}}}]}],"
                                 " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"tools\": null}",
                                 0, NULL);
        char *out = NULL;
        if (kr_template_render(t, ctx, &out) == KR_OK)
            free(out);
        json_decref(ctx);
        kr_template_free(t);
    }
    free(src);
    return 0;
}
