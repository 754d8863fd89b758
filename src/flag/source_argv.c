/* source_argv.c — the command-line source: --name=value, --name value,
 * --name / --no-name for booleans, "--" ends the flags, other words are
 * positional arguments (when args_usage allows them). Part of
 * knit_flags_parse (main thread, before threads).
 */
#include "flag/flag_int.h"

#include "knit/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- command line ---------------------------------------------------------------- */

static int add_arg(knit_flags *fs, const char *a)
{
    if (!fs->o.args_usage) {
        knit__flag_err(fs, "%s: unexpected argument \"%s\" from argv", fs->o.program, a);
        return KNIT_EBADFLAG;
    }
    char **n = realloc(fs->args, (size_t)(fs->nargs + 2) * sizeof *n);
    if (!n) return KNIT_ENOMEM;
    fs->args = n;
    if (!(n[fs->nargs] = strdup(a))) return KNIT_ENOMEM;
    n[++fs->nargs] = NULL;
    return 0;
}

/* Split "--name=value" / "-name" into NAME (copied to buf) and VALUE (NULL
 * when there is no '='). */
static void split_arg(const char *a, char *buf, size_t len, const char **value)
{
    a += a[1] == '-' ? 2 : 1;
    const char *eq = strchr(a, '=');
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
    if (nl >= len) nl = len - 1;
    memcpy(buf, a, nl);
    buf[nl] = '\0';
    *value = eq ? eq + 1 : NULL;
}

static void unknown_arg(knit_flags *fs, const char *name)
{
    bool neg;
    const char *s = knit__flag_suggest(fs, name, &neg);
    if (s)
        knit__flag_err(fs, "%s: unknown flag --%s from argv (did you mean --%s%s?)", fs->o.program,
                       name, neg ? "no-" : "", s);
    else
        knit__flag_err(fs, "%s: unknown flag --%s from argv (see --help)", fs->o.program, name);
}

/* One pass over argv. PASS 0 only collects --config/--help/--version (so
 * files load first and help works even next to a bad flag); PASS 1 applies
 * everything else. */
int knit__flag_scan_argv(knit_flags *fs, int argc, char **argv, int pass, unsigned epoch)
{
    bool flags_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (flags_done || a[0] != '-' || a[1] == '\0') {
            if (pass == 1) {
                int rc = add_arg(fs, a);
                if (rc < 0) return rc;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags_done = true;
            continue;
        }
        char name[KNIT_FLAG_NAME_MAX + 8];
        const char *value;
        split_arg(a, name, sizeof name, &value);
        if (strcmp(name, "h") == 0) strcpy(name, "help");
        bool negated = false;
        knit_flag *f = knit__flag_find(fs, name);
        if (!f && strncmp(name, "no-", 3) == 0) {
            knit_flag *g = knit__flag_find(fs, name + 3);
            if (g && g->def->type == KNIT_FLAG_BOOL) {
                f = g;
                negated = true;
            }
        }
        if (!f) {
            if (pass == 0) continue;
            unknown_arg(fs, name);
            return KNIT_EBADFLAG;
        }
        const char *text = value;
        if (f->def->type == KNIT_FLAG_BOOL) {
            if (negated && value) {
                if (pass == 0) continue;
                knit__flag_err(fs, "%s: flag --%s: takes no value (from argv)", fs->o.program,
                               name);
                return KNIT_EBADFLAG;
            }
            if (!value) text = negated ? "false" : "true";
        } else if (!value) {
            if (i + 1 >= argc) {
                if (pass == 0) continue;
                char why[KNIT_FLAG_ERROR_MAX / 2];
                knit__flag_expected(f->def, why, sizeof why);
                knit__flag_err(fs, "%s: flag --%s: missing value from argv: expected %s",
                               fs->o.program, name, why);
                return KNIT_EBADFLAG;
            }
            text = argv[++i];
        }
        bool is_builtin = f->builtin;
        if ((pass == 0) != is_builtin) continue;
        if (is_builtin && strcmp(f->def->name, "print-config") != 0) {
            /* help/version act in pass 0, config files are read after it. */
        }
        int rc = knit__flag_assign(f, text, KNIT_FLAG_SRC_ARGV, "argv", NULL, epoch);
        if (rc < 0) return rc;
    }
    return 0;
}
