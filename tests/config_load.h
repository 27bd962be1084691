/* A config.json from the repository (configs/, tests/fixtures/) as kr_hparams, for tests that need a
 * model's shapes but not its weights; exits when the file does not load (nothing after would mean much). */
#ifndef KR_TEST_CONFIG_LOAD_H
#define KR_TEST_CONFIG_LOAD_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "test.h"

static inline kr_hparams load_config(const char *rel) {
    char p[1024];
    json_t *j = json_load_file(test_path(rel, p, sizeof p), 0, NULL);
    kr_hparams hp;
    memset(&hp, 0, sizeof hp);
    if (!j || kr_hparams_from_json(j, p, &hp) != KR_OK) {
        fprintf(stderr, "cannot load %s: %s\n", p, kr_error());
        exit(1);
    }
    json_decref(j);
    return hp;
}

#endif
