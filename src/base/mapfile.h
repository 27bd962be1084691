/* Read-only memory mapping of a whole file: how weights are read without copying them. */
#ifndef KR_BASE_MAPFILE_H
#define KR_BASE_MAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    char *path;          /* owned copy, for error messages */
    const uint8_t *data; /* NULL when size == 0 */
    size_t size;
} kr_mapped_file;

kr_status kr_map_file(const char *path, kr_mapped_file *out);
void kr_unmap_file(kr_mapped_file *f);

/* Reads a whole (small) file into a NUL-terminated heap buffer. */
kr_status kr_read_file(const char *path, char **out, size_t *size);

int kr_file_exists(const char *path);

/* The first line of a (small, e.g. sysfs) file without its newline into buf; 0 when it cannot be read. */
int kr_read_first_line(const char *path, char *buf, size_t n);

#endif
