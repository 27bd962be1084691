/* Minimal .npy reader/writer for float32 arrays. */
#include "base/npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapfile.h"

kr_status kr_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape) {
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%" PRId64 "%s", shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        count *= (size_t)shape[i];
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* magic(6) + version(2) + len(2) + dict + padding + '\n' is a multiple of 64 */
    size_t header_len = (size_t)n + 1;
    size_t total = 10 + header_len;
    size_t pad = (64 - total % 64) % 64;
    header_len += pad;

    FILE *fp = fopen(path, "wb");
    if (!fp)
        return kr_fail(KR_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(header_len & 0xff),
                             (unsigned char)(header_len >> 8)};
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(dict, 1, (size_t)n, fp) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++)
        ok = fputc(' ', fp) != EOF;
    ok = ok && fputc('\n', fp) != EOF;
    ok = ok && fwrite(data, sizeof(float), count, fp) == count;
    ok = (fclose(fp) == 0) && ok;
    if (!ok)
        return kr_fail(KR_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return KR_OK;
}

kr_status kr_npy_read_f32(const char *path, kr_npy *out) {
    memset(out, 0, sizeof *out);
    kr_mapped_file f;
    KR_TRY(kr_map_file(path, &f));
    kr_status s = KR_OK;
    const uint8_t *p = f.data;
    if (f.size < 10 || memcmp(p, "\x93NUMPY", 6) != 0) {
        s = kr_fail(KR_ERR_FORMAT, "%s: not a .npy file", path);
        goto done;
    }
    size_t hlen = p[6] == 1 ? (size_t)(p[8] | p[9] << 8) : 0;
    size_t hoff = 10;
    if (p[6] >= 2 && f.size >= 12) {
        hlen = (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
        hoff = 12;
    }
    if (hlen == 0 || hoff + hlen > f.size) {
        s = kr_fail(KR_ERR_FORMAT, "%s: bad .npy header length", path);
        goto done;
    }
    char header[1024];
    if (hlen >= sizeof header) {
        s = kr_fail(KR_ERR_FORMAT, "%s: .npy header too long", path);
        goto done;
    }
    memcpy(header, p + hoff, hlen);
    header[hlen] = '\0';
    if (!strstr(header, "'<f4'") || !strstr(header, "'fortran_order': False")) {
        s = kr_fail(KR_ERR_UNSUPPORTED, "%s: only C-order little-endian float32 .npy is supported", path);
        goto done;
    }
    const char *sh = strstr(header, "'shape': (");
    if (!sh) {
        s = kr_fail(KR_ERR_FORMAT, "%s: .npy header has no shape", path);
        goto done;
    }
    sh += strlen("'shape': (");
    size_t count = 1;
    while (*sh && *sh != ')') {
        char *end;
        long long v = strtoll(sh, &end, 10);
        if (end == sh)
            break;
        if (out->ndim == 4 || v < 0) {
            s = kr_fail(KR_ERR_UNSUPPORTED, "%s: .npy shape not supported", path);
            goto done;
        }
        out->shape[out->ndim++] = v;
        count *= (size_t)v;
        sh = end;
        while (*sh == ',' || *sh == ' ')
            sh++;
    }
    if (hoff + hlen + count * 4 != f.size) {
        s = kr_fail(KR_ERR_FORMAT, "%s: .npy data size does not match its shape", path);
        goto done;
    }
    out->data = malloc(count * 4 + 1);
    if (!out->data) {
        s = kr_fail(KR_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(out->data, p + hoff + hlen, count * 4);
done:
    kr_unmap_file(&f);
    return s;
}

void kr_npy_free(kr_npy *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
