/* Fuzzes config.json interpretation: any JSON document is accepted as hyper-parameters or refused with
 * a message naming the field. */
#include "base/json.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *cfg;
    if (kr_json_parse((const char *)data, size, "fuzz config.json", &cfg) != KR_OK)
        return 0;
    kr_hparams hp;
    if (json_is_object(cfg) && kr_hparams_from_json(cfg, "fuzz config.json", &hp) == KR_OK)
        kr_hparams_free(&hp);
    json_decref(cfg);
    return 0;
}
