/* Stop strings across token boundaries: nothing of a stop string is ever shown, nothing else is lost. */
#include "engine/stop.h"
#include "test.h"

static char shown[256];

static bool feed(kr_stop *s, const char *text) {
    const char *out;
    size_t n;
    bool hit = kr_stop_push(s, text, strlen(text), &out, &n);
    strncat(shown, out, n);
    return hit;
}

int main(void) {
    const char *stops[] = {"END", "\n\nUser:", ""};
    kr_stop *s;
    CHECK(kr_stop_create(stops, 3, &s) == KR_OK, "create");
    shown[0] = 0;
    CHECK(!feed(s, "abc E"), "no stop yet");
    CHECK(strcmp(shown, "abc ") == 0, "'E' held back: shown '%s'", shown);
    CHECK(!feed(s, "N"), "still a prefix");
    CHECK(strcmp(shown, "abc ") == 0, "'EN' held back: shown '%s'", shown);
    CHECK(feed(s, "D and more"), "stop string completed across three pushes");
    CHECK(strcmp(shown, "abc ") == 0, "nothing of the stop string shown: '%s'", shown);
    kr_stop_free(s);

    CHECK(kr_stop_create(stops, 3, &s) == KR_OK, "create");
    shown[0] = 0;
    CHECK(!feed(s, "x E"), "prefix");
    CHECK(!feed(s, "Z\n"), "not the stop after all");
    CHECK(strcmp(shown, "x EZ") == 0, "'E' released once it stops being a prefix, '\\n' held: '%s'", shown);
    CHECK(!feed(s, "\nUse"), "prefix of the second stop");
    CHECK(strcmp(shown, "x EZ") == 0, "'\\n\\nUse' held: '%s'", shown);
    const char *out;
    size_t n;
    kr_stop_flush(s, &out, &n);
    strncat(shown, out, n);
    CHECK(strcmp(shown, "x EZ\n\nUse") == 0, "flush gives back what was held: '%s'", shown);
    kr_stop_free(s);

    /* the earliest stop wins; text after it never appears */
    CHECK(kr_stop_create(stops, 2, &s) == KR_OK, "create");
    shown[0] = 0;
    CHECK(feed(s, "hi\n\nUser: END"), "stop inside one push");
    CHECK(strcmp(shown, "hi") == 0, "cut before the earliest stop: '%s'", shown);
    kr_stop_free(s);

    /* no stop strings: everything passes straight through */
    CHECK(kr_stop_create(NULL, 0, &s) == KR_OK, "create");
    shown[0] = 0;
    CHECK(!feed(s, "END"), "no stops");
    CHECK(strcmp(shown, "END") == 0, "shown '%s'", shown);
    kr_stop_flush(s, &out, &n);
    CHECK(n == 0, "nothing held");
    kr_stop_free(s);
    return test_summary("test_stop");
}
