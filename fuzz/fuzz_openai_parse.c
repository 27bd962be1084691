/* libFuzzer target for the OpenAI request parser: any bytes, both endpoints; the sanitizers judge.
 * Built and run by scripts/fuzz.sh. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "server/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int kind = 0; kind < 2; kind++) {
        kr_oai_request r;
        kr_oai_error e;
        if (!kr_oai_parse(kind ? KR_OAI_COMPLETION : KR_OAI_CHAT, (const char *)data, size, &r, &e)) {
            char *body = kr_oai_error_body(&e);
            free(body);
        }
        kr_oai_request_free(&r);
    }
    return 0;
}
