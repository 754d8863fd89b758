/* output.c — what the flag set prints: --help, the effective configuration
 * (--print-config, itself a valid config file) and the Markdown table of
 * every flag (--help-markdown, for the docs). All three read the same def
 * tables. [any] thread that owns the set (normally the main thread, at
 * start-up).
 */
#include "flag/flag_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- output ------------------------------------------------------------------------- */

static void metavar(const knit_flag_def *d, char *buf, size_t len)
{
    if (d->metavar) {
        snprintf(buf, len, "%s", d->metavar);
        return;
    }
    switch (d->type) {
    case KNIT_FLAG_STRING:
        snprintf(buf, len, "STRING");
        return;
    case KNIT_FLAG_INT64:
        snprintf(buf, len, "INT");
        return;
    case KNIT_FLAG_UINT64:
        snprintf(buf, len, "UINT");
        return;
    case KNIT_FLAG_DOUBLE:
        snprintf(buf, len, "FLOAT");
        return;
    case KNIT_FLAG_BOOL:
        buf[0] = '\0';
        return;
    case KNIT_FLAG_DURATION:
        snprintf(buf, len, "DURATION");
        return;
    case KNIT_FLAG_BYTES:
        snprintf(buf, len, "BYTES");
        return;
    case KNIT_FLAG_LIST:
        snprintf(buf, len, "LIST");
        return;
    case KNIT_FLAG_ENDPOINT:
        snprintf(buf, len, "ENDPOINT");
        return;
    case KNIT_FLAG_ENUM: {
        size_t o = 0;
        buf[0] = '\0';
        for (size_t i = 0; d->choices[i] && o < len; i++)
            o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? "|" : "", d->choices[i]);
        return;
    }
    }
    buf[0] = '\0';
}

void knit_flags_write_help(const knit_flags *fs, FILE *out)
{
    fprintf(out, "Usage: %s [flags]%s%s\n", fs->o.program, fs->o.args_usage ? " " : "",
            fs->o.args_usage ? fs->o.args_usage : "");
    if (fs->o.summary) fprintf(out, "\n%s\n", fs->o.summary);
    for (size_t g = 0; g < fs->ngroups; g++) {
        bool header = false;
        for (size_t i = 0; i < fs->n; i++) {
            const knit_flag *f = fs->flags[i];
            const knit_flag_def *d = f->def;
            if (f->group != g || (d->opts & KNIT_FLAG_HIDDEN)) continue;
            if (!header) {
                fprintf(out, "\n%s:\n", fs->groups[g].title);
                header = true;
            }
            char mv[256];
            metavar(d, mv, sizeof mv);
            if (d->type == KNIT_FLAG_BOOL)
                fprintf(out, "  --%s%s", f->builtin ? "" : "[no-]", d->name);
            else
                fprintf(out, "  --%s %s", d->name, mv);
            if (!f->builtin) {
                const char *def = d->def ? d->def : "";
                fprintf(out, " (%s", knit_flag_type_name(d->type));
                if (*def)
                    fprintf(out, ", default %s", def);
                else
                    fprintf(out, ", default \"\"");
                if (knit__flag_env_enabled(fs)) {
                    char env[KNIT_FLAG_NAME_MAX + 64];
                    knit__flag_env_name(fs, d->name, env, sizeof env);
                    fprintf(out, ", env %s", env);
                }
                if (d->opts & KNIT_FLAG_MUTABLE) fprintf(out, ", mutable");
                fputc(')', out);
            }
            fprintf(out, "\n      %s\n", d->help ? d->help : "");
        }
    }
}

/* Shortest "%g" form that reads back to the same double, for print-config. */
static void format_value(const knit_flag *f, char *buf, size_t len)
{
    if (f->def->type == KNIT_FLAG_DOUBLE) {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, len, "%.*g", prec, f->v.d);
            if (strtod(buf, NULL) == f->v.d) return;
        }
    }
    knit_flag_format(f, buf, len);
}

void knit_flags_write_config(const knit_flags *fs, FILE *out)
{
    fprintf(out, "# %s: effective configuration (value ; source)\n", fs->o.program);
    for (size_t g = 0; g < fs->ngroups; g++) {
        bool header = false;
        for (size_t i = 0; i < fs->n; i++) {
            const knit_flag *f = fs->flags[i];
            if (f->group != g || f->builtin) continue;
            if (!header) {
                fprintf(out, "\n# %s\n", fs->groups[g].title);
                header = true;
            }
            char small[256];
            int need = knit_flag_format(f, small, sizeof small);
            char *val = small;
            if (need >= (int)sizeof small) {
                val = malloc((size_t)need + 1);
                if (!val) continue;
                knit_flag_format(f, val, (size_t)need + 1);
            } else {
                format_value(f, small, sizeof small);
            }
            size_t vl = strlen(val);
            /* Quoted when the file reader would otherwise change it: spaces
             * at either end are trimmed, and a value starting with ';' or
             * '#' would be taken for a comment (found by fuzz_flag_config). */
            bool quote = vl == 0 || isspace((unsigned char)val[0]) ||
                         isspace((unsigned char)val[vl - 1]) || val[0] == '"' || val[0] == ';' ||
                         val[0] == '#';
            fprintf(out, "%s = %s%s%s ; %s\n", f->def->name, quote ? "\"" : "", val,
                    quote ? "\"" : "", knit_flag_origin(f));
            if (val != small) free(val);
        }
    }
}

static void md_cell(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') fputc('\\', out);
        fputc(*s, out);
    }
}

void knit_flags_write_docs(const knit_flags *fs, FILE *out)
{
    for (size_t g = 0; g < fs->ngroups; g++) {
        fprintf(out,
                "### %s\n\n| flag | type | default | env | description |\n"
                "|---|---|---|---|---|\n",
                fs->groups[g].title);
        for (size_t i = 0; i < fs->n; i++) {
            const knit_flag *f = fs->flags[i];
            const knit_flag_def *d = f->def;
            if (f->group != g || (d->opts & KNIT_FLAG_HIDDEN)) continue;
            char mv[256], env[KNIT_FLAG_NAME_MAX + 64] = "";
            metavar(d, mv, sizeof mv);
            if (knit__flag_env_enabled(fs) && !f->builtin)
                knit__flag_env_name(fs, d->name, env, sizeof env);
            fprintf(out, "| `--%s` | ", d->name);
            md_cell(out, d->type == KNIT_FLAG_ENUM ? mv : knit_flag_type_name(d->type));
            fprintf(out, " | `");
            md_cell(out, d->def && *d->def ? d->def : "\"\"");
            fprintf(out, "` | %s%s%s | ", *env ? "`" : "", env, *env ? "`" : "");
            md_cell(out, d->help);
            if (d->opts & KNIT_FLAG_MUTABLE) fprintf(out, " (mutable at run time)");
            fprintf(out, " |\n");
        }
        fputc('\n', out);
    }
}
