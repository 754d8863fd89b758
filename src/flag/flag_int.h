/* flag/flag_int.h — shared by the flag module's files (not installed).
 *
 *   flag.c         the set: registration, values (parse, commit), the
 *                  parse order of the sources, run-time reads and writes
 *   source_file.c  --config files (libinih)
 *   source_env.c   the environment (PREFIX + upper-snake names)
 *   source_argv.c  the command line
 *   output.c       --help, --print-config, --help-markdown (docs)
 *   suggest.c      "did you mean" for unknown names
 *
 * Threads: as the module (knit/flag.h): parse on the main thread before
 * other threads start; afterwards the reactor thread only.
 */
#ifndef KNIT_FLAG_INT_H
#define KNIT_FLAG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/flag.h"

struct knit_flag {
    const knit_flag_def *def;
    knit_flags *fs;
    size_t group; /* index into fs->groups */
    knit_flag_source src;
    unsigned epoch; /* which source instance set it (lists append within one) */
    char *origin;   /* "notes.conf:3" / "env NOTES_X"; NULL: static by src */
    bool builtin;
    union {
        char *s;
        int64_t i;
        uint64_t u;
        double d;
        bool b;
        int e;
    } v;
    char **list; /* LIST: NULL-terminated */
    size_t nlist;
};

struct knit__flag_group {
    char *name;
    char *title;
};

struct knit_flags {
    knit_flags_options o;
    knit_flag **flags;
    size_t n, cap;
    struct knit__flag_group *groups;
    size_t ngroups;
    char err[KNIT_FLAG_ERROR_MAX];
    char **retired; /* replaced strings and lists, freed with the set */
    size_t nretired, capretired;
    char **args;
    int nargs;
    bool parsed;
    unsigned epoch;
    /* builtins */
    bool want_help, want_version, want_print;
};

/* ---- flag.c ---------------------------------------------------------------------------- */

/* Set the set's error message (printf-style, truncated at KNIT_FLAG_ERROR_MAX). */
void knit__flag_err(knit_flags *fs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The flag called NAME, or NULL. */
knit_flag *knit__flag_find(const knit_flags *fs, const char *name);
/* What a value of D's type looks like ("an integer", "one of a, b"). */
void knit__flag_expected(const knit_flag_def *d, char *buf, size_t len);
/* Parse TEXT and commit it to F, or set the standard bad-value message. WHERE
 * is the human form of the source ("argv", "env NOTES_X", "a.conf:3"),
 * ORIGIN what knit_flag_origin reports (copied; NULL: by source), EPOCH the
 * source instance (a list set again by the same instance appends). */
int knit__flag_assign(knit_flag *f, const char *text, knit_flag_source src, const char *where,
                      const char *origin, unsigned epoch);

/* ---- source_file.c ----------------------------------------------------------------------- */

/* Read one --config file into the set. 0, KNIT_EBADFLAG (message set) or
 * KNIT_ENOMEM. */
int knit__flag_load_file(knit_flags *fs, const char *path);

/* ---- source_env.c ------------------------------------------------------------------------ */

/* Whether the set reads the environment (an env_prefix was given). */
bool knit__flag_env_enabled(const knit_flags *fs);
/* The variable for flag NAME: PREFIX + upper-snake NAME, into BUF. */
void knit__flag_env_name(const knit_flags *fs, const char *name, char *buf, size_t len);
/* Apply the variables of ENVP that start with the prefix. 0, KNIT_EBADFLAG
 * (message set) or KNIT_ENOMEM. */
int knit__flag_load_env(knit_flags *fs, char **envp);

/* ---- source_argv.c ----------------------------------------------------------------------- */

/* One pass over argv. PASS 0 only applies the built-in flags (--config,
 * --help, --version, ...) so files load first and help works even next to
 * a bad flag; PASS 1 applies everything else and collects positional
 * arguments. 0, KNIT_EBADFLAG (message set) or KNIT_ENOMEM. */
int knit__flag_scan_argv(knit_flags *fs, int argc, char **argv, int pass, unsigned epoch);

/* ---- suggest.c --------------------------------------------------------------------------- */

/* The closest flag name to NAME (a bool also as "no-NAME": *NEGATED), or
 * NULL when none is close enough. */
const char *knit__flag_suggest(const knit_flags *fs, const char *name, bool *negated);

#endif
