/* source_env.c — the environment source: PREFIX + upper-snake flag name
 * (NOTES_HTTP_MAX_BODY for --http-max-body). Part of knit_flags_parse (main
 * thread, before threads); the name mapping is also used by output.c.
 */
#include "flag/flag_int.h"

#include "knit/error.h"
#include "knit/log.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

void knit__flag_env_name(const knit_flags *fs, const char *name, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "%s", fs->o.env_prefix ? fs->o.env_prefix : "");
    for (const char *p = name; *p && o + 1 < len; p++)
        buf[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    if (o < len) buf[o] = '\0';
}

bool knit__flag_env_enabled(const knit_flags *fs)
{
    return fs->o.env_prefix && *fs->o.env_prefix;
}

/* ---- environment ----------------------------------------------------------------- */

int knit__flag_load_env(knit_flags *fs, char **envp)
{
    if (!knit__flag_env_enabled(fs)) return 0;
    const char *prefix = fs->o.env_prefix;
    size_t pl = strlen(prefix);
    unsigned epoch = ++fs->epoch;
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, pl) != 0) continue;
        const char *eq = strchr(*e, '=');
        if (!eq || (size_t)(eq - *e) <= pl) continue;
        char var[KNIT_FLAG_NAME_MAX + 64];
        size_t vl = (size_t)(eq - *e);
        if (vl >= sizeof var) vl = sizeof var - 1;
        memcpy(var, *e, vl);
        var[vl] = '\0';
        char name[KNIT_FLAG_NAME_MAX + 64];
        size_t k = 0;
        for (const char *p = var + pl; *p && k + 1 < sizeof name; p++)
            name[k++] = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
        name[k] = '\0';
        knit_flag *f = knit__flag_find(fs, name);
        char where[sizeof var + 8];
        snprintf(where, sizeof where, "env %s", var);
        if (!f || f->builtin) {
            bool neg;
            const char *s = f ? NULL : knit__flag_suggest(fs, name, &neg);
            if (f) {
                knit__flag_err(fs, "%s: flag --%s from %s: only allowed on the command line",
                               fs->o.program, name, where);
            } else if (s) {
                char sug[KNIT_FLAG_NAME_MAX + 64];
                knit__flag_env_name(fs, s, sug, sizeof sug);
                knit__flag_err(fs, "%s: unknown flag %s from env (did you mean %s?)", fs->o.program,
                               var, sug);
            } else {
                knit__flag_err(fs, "%s: unknown flag %s from env", fs->o.program, var);
            }
            if (!f && fs->o.env_unknown_warn) {
                KNIT_WARN("flag", "%s (ignored)", fs->err);
                fs->err[0] = '\0';
                continue;
            }
            return KNIT_EBADFLAG;
        }
        int rc = knit__flag_assign(f, eq + 1, KNIT_FLAG_SRC_ENV, where, where, epoch);
        if (rc < 0) return rc;
    }
    return 0;
}
