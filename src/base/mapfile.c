/* mmap-based file access. Weights are mapped MAP_PRIVATE + PROT_READ: the page cache is the only copy. */
#include "base/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

kr_status kr_map_file(const char *path, kr_mapped_file *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kr_fail(KR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kr_fail(KR_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kr_fail(KR_ERR_IO, "%s: not a regular file", path);
    }
    out->size = (size_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return kr_fail(KR_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, out->size, strerror(e));
        }
        out->data = p;
    }
    close(fd);
    out->path = strdup(path);
    if (!out->path) {
        kr_unmap_file(out);
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", path);
    }
    return KR_OK;
}

void kr_unmap_file(kr_mapped_file *f) {
    if (f->data)
        munmap((void *)f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

kr_status kr_read_file(const char *path, char **out, size_t *size) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kr_fail(KR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, fp);
        len += n;
        if (len + 1 < cap)
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    int read_error = ferror(fp);
    fclose(fp);
    if (!buf)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory reading file", path);
    if (read_error) {
        free(buf);
        return kr_fail(KR_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *out = buf;
    if (size)
        *size = len;
    return KR_OK;
}

int kr_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int kr_read_first_line(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int ok = fgets(buf, (int)n, f) != NULL;
    fclose(f);
    if (ok)
        buf[strcspn(buf, "\n")] = 0;
    return ok;
}
