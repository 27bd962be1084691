/* --expert-mode values and the mode choice by sizes (backend/cuda/expert_mode.h), on the CPU: every
 * accepted spelling, every rejected one with a message naming the flag and the value, and auto /
 * explicit choices for DeepSeek-V2-Lite-like sizes (26 MoE layers of 277 MB) under several budgets. */
#include <stdio.h>
#include <string.h>

#include "backend/cuda/expert_mode.h"
#include "test.h"

static void ok(const char *s, kr_expert_mode_kind kind, int group) {
    kr_expert_mode m;
    kr_status st = kr_expert_mode_parse(s, &m);
    CHECK(st == KR_OK && m.kind == kind && m.group == group, "parse '%s': status %d kind %d group %d (%s)", s, st,
          m.kind, m.group, st ? kr_error() : "");
    char buf[32];
    kr_expert_mode_str(&m, buf, sizeof buf);
    kr_expert_mode back;
    CHECK(kr_expert_mode_parse(buf, &back) == KR_OK && back.kind == m.kind && back.group == m.group, "round trip %s",
          buf);
}

static void bad(const char *s, const char *part) {
    kr_expert_mode m;
    kr_status st = kr_expert_mode_parse(s, &m);
    CHECK(st == KR_ERR_ARG && strstr(kr_error(), "--expert-mode") && strstr(kr_error(), part),
          "parse '%s' should fail naming '%s': %s", s, part, st ? kr_error() : "accepted");
}

int main(void) {
    ok("auto", KR_EXPERTS_AUTO, 0);
    ok("persistent", KR_EXPERTS_PERSISTENT, 0);
    ok("chunked", KR_EXPERTS_CHUNKED, 1);
    ok("grouped:4", KR_EXPERTS_GROUPED, 4);
    ok("grouped:13", KR_EXPERTS_GROUPED, 13);
    ok("grouped:1", KR_EXPERTS_CHUNKED, 1);
    bad("", "empty");
    bad("grouped", "layer count");
    bad("grouped:", "layer count");
    bad("grouped:0", "at least 1");
    bad("grouped:-2", "-2");
    bad("grouped:+2", "+2");
    bad("grouped:x", "'x'");
    bad("grouped:3x", "'3x'");
    bad("grouped4", "layer count");
    bad("persist", "unknown mode");
    bad("Chunked", "unknown mode");

    const int L = 26;
    const int64_t lb = 277LL << 20, G = 1LL << 30;
    kr_expert_mode req, out;
    char why[256];
    kr_expert_mode_parse("auto", &req);
    CHECK(kr_expert_mode_choose(&req, L, lb, 100 * G, &out, why, sizeof why) == KR_OK && out.kind == KR_EXPERTS_PERSISTENT &&
              out.group == L, "auto, 100 GiB: %s", why);
    CHECK(kr_expert_mode_choose(&req, L, lb, (int64_t)L * lb, &out, why, sizeof why) == KR_OK &&
              out.kind == KR_EXPERTS_PERSISTENT, "auto, exactly all: %s", why);
    CHECK(kr_expert_mode_choose(&req, L, lb, 4 * G, &out, why, sizeof why) == KR_OK && out.kind == KR_EXPERTS_GROUPED &&
              out.group == (int)(4 * G / (2 * lb)) && strstr(why, "grouped:7"), "auto, 4 GiB -> grouped:7: %s", why);
    CHECK(kr_expert_mode_choose(&req, L, lb, 2 * lb + 5, &out, why, sizeof why) == KR_OK && out.kind == KR_EXPERTS_CHUNKED &&
              out.group == 1, "auto, two layers -> chunked: %s", why);
    CHECK(kr_expert_mode_choose(&req, L, lb, 2 * lb - 1, &out, why, sizeof why) == KR_ERR_ARG &&
              strstr(kr_error(), "not even chunked"), "auto, too little: %s", kr_error());

    kr_expert_mode_parse("persistent", &req);
    CHECK(kr_expert_mode_choose(&req, L, lb, 4 * G, &out, why, sizeof why) == KR_ERR_ARG &&
              strstr(kr_error(), "--expert-mode persistent") && strstr(kr_error(), "4.00 GiB"), "persistent in 4 GiB: %s",
          kr_error());
    kr_expert_mode_parse("grouped:4", &req);
    CHECK(kr_expert_mode_choose(&req, L, lb, 4 * G, &out, why, sizeof why) == KR_OK && out.kind == KR_EXPERTS_GROUPED &&
              out.group == 4, "grouped:4 in 4 GiB: %s", why);
    CHECK(kr_expert_mode_bytes(&out, L, lb) == 8 * lb, "grouped:4 holds two slots of 4 layers");
    CHECK(kr_expert_mode_choose(&req, L, lb, 2 * G, &out, why, sizeof why) == KR_ERR_ARG && strstr(kr_error(), "grouped:4"),
          "grouped:4 in 2 GiB: %s", kr_error());
    kr_expert_mode_parse("grouped:13", &req); /* two slots of 13 = all 26 layers: persistent */
    CHECK(kr_expert_mode_choose(&req, L, lb, 100 * G, &out, why, sizeof why) == KR_OK && out.kind == KR_EXPERTS_PERSISTENT &&
              strstr(why, "persistent"), "grouped:13 of 26: %s", why);
    kr_expert_mode_parse("chunked", &req);
    CHECK(kr_expert_mode_choose(&req, L, lb, 100 * G, &out, why, sizeof why) == KR_OK && out.kind == KR_EXPERTS_CHUNKED &&
              out.group == 1, "chunked: %s", why);
    CHECK(kr_expert_mode_choose(&req, 0, lb, G, &out, NULL, 0) == KR_ERR_ARG, "no layers");
    return test_summary("test_expert_mode");
}
