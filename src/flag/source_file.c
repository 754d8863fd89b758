/* source_file.c — the config-file source: --config FILE, "name = value"
 * lines with optional [section]s, read with Debian's libinih (limits in
 * knit/flag.h). Part of knit_flags_parse (main thread, before threads).
 */
#include "flag/flag_int.h"

#include "knit/error.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

/* ---- config files ------------------------------------------------------------------ */

struct file_ctx {
    knit_flags *fs;
    const char *path;
    const char *data; /* whole file, NUL-terminated */
    size_t pos, len;
    int lineno; /* line most recently handed to inih */
    int rc;     /* first error */
    unsigned epoch;
};

/* fgets-style reader for ini_parse_stream that counts lines (Debian's inih
 * is built without INI_HANDLER_LINENO) and refuses over-long lines instead
 * of letting inih split them into two. */
static char *file_reader(char *str, int num, void *stream)
{
    struct file_ctx *c = stream;
    if (c->pos >= c->len || c->rc < 0) return NULL;
    const char *start = c->data + c->pos;
    const char *nl = memchr(start, '\n', c->len - c->pos);
    size_t l = nl ? (size_t)(nl - start) + 1 : c->len - c->pos;
    c->pos += l;
    c->lineno++;
    if (memchr(start, '\0', l)) {
        knit__flag_err(c->fs, "%s: %s:%d: NUL byte in config file", c->fs->o.program, c->path,
                       c->lineno);
        c->rc = KNIT_EBADFLAG;
        return NULL;
    }
    size_t content = l - (start[l - 1] == '\n');
    if (content + 3 > (size_t)num || content > KNIT_FLAG_LINE_MAX) {
        knit__flag_err(c->fs, "%s: %s:%d: line longer than %d bytes", c->fs->o.program, c->path,
                       c->lineno, num - 3 < KNIT_FLAG_LINE_MAX ? num - 3 : KNIT_FLAG_LINE_MAX);
        c->rc = KNIT_EBADFLAG;
        return NULL;
    }
    memcpy(str, start, l);
    str[l] = '\0';
    return str;
}

static int file_handler(void *user, const char *section, const char *key, const char *value)
{
    struct file_ctx *c = user;
    knit_flags *fs = c->fs;
    if (c->rc < 0) return 0;
    char name[2 * KNIT_FLAG_NAME_MAX + 2];
    size_t o = 0;
    if (section && *section) o = (size_t)snprintf(name, sizeof name, "%s-", section);
    snprintf(name + (o < sizeof name ? o : sizeof name - 1), sizeof name - o, "%s", key);
    for (char *p = name; *p; p++)
        *p = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
    char where[512];
    snprintf(where, sizeof where, "%s:%d", c->path, c->lineno);
    knit_flag *f = knit__flag_find(fs, name);
    if (!f || f->builtin) {
        bool neg;
        const char *s = f ? NULL : knit__flag_suggest(fs, name, &neg);
        if (f)
            knit__flag_err(fs, "%s: flag --%s from %s: only allowed on the command line",
                           fs->o.program, name, where);
        else if (s)
            knit__flag_err(fs, "%s: unknown flag \"%s\" from %s (did you mean \"%s%s\"?)",
                           fs->o.program, name, where, neg ? "no-" : "", s);
        else
            knit__flag_err(fs, "%s: unknown flag \"%s\" from %s", fs->o.program, name, where);
        c->rc = KNIT_EBADFLAG;
        return 0;
    }
    /* Optional double quotes keep leading/trailing spaces. */
    size_t vl = strlen(value);
    char *v = NULL;
    if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
        v = strndup(value + 1, vl - 2);
        if (!v) {
            c->rc = KNIT_ENOMEM;
            return 0;
        }
    }
    int rc = knit__flag_assign(f, v ? v : value, KNIT_FLAG_SRC_FILE, where, where, c->epoch);
    free(v);
    if (rc < 0) {
        c->rc = rc;
        return 0;
    }
    return 1;
}

static int read_file(knit_flags *fs, const char *path, char **out, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -errno;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            size_t nc = cap ? cap * 2 : 8192;
            if (nc > (64u << 20)) {
                free(buf);
                fclose(fp);
                return KNIT_ELIMIT;
            }
            char *b = realloc(buf, nc);
            if (!b) {
                free(buf);
                fclose(fp);
                return KNIT_ENOMEM;
            }
            buf = b;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(fp) ? -EIO : 0;
    fclose(fp);
    if (err) {
        free(buf);
        return err;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    (void)fs;
    return 0;
}

int knit__flag_load_file(knit_flags *fs, const char *path)
{
    char *data = NULL;
    size_t len = 0;
    int rc = read_file(fs, path, &data, &len);
    if (rc < 0) {
        knit__flag_err(fs, "%s: cannot read config file \"%s\" (from --config): %s", fs->o.program,
                       path, rc == KNIT_ELIMIT ? "larger than 64 MiB" : knit_strerror(rc));
        return KNIT_EBADFLAG;
    }
    struct file_ctx c = {.fs = fs, .path = path, .data = data, .len = len, .epoch = ++fs->epoch};
    /* Debian's inih (r55) reads into a 200-byte stack buffer (its
     * ini_max_line / ini_use_stack globals do not change that in the
     * packaged build), so lines are limited to 197 bytes; file_reader
     * reports longer ones instead of letting inih split them. */
    int line = ini_parse_stream(file_reader, &c, file_handler, &c);
    free(data);
    if (c.rc < 0) return c.rc == KNIT_ENOMEM ? KNIT_ENOMEM : KNIT_EBADFLAG;
    if (line > 0) {
        knit__flag_err(fs, "%s: %s:%d: expected \"name = value\", a [section] or a # comment",
                       fs->o.program, path, line);
        return KNIT_EBADFLAG;
    }
    if (line < 0) {
        knit__flag_err(fs, "%s: cannot read config file \"%s\": out of memory", fs->o.program,
                       path);
        return KNIT_ENOMEM;
    }
    return 0;
}
