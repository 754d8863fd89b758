/* knit/flag.h — typed flags from defaults, config files, the environment
 * and the command line.
 *
 * A program owns one flag set (knit_flags). Each module contributes a *group*
 * of flags as a static table of knit_flag_def — the one place where the
 * flag's name, type, default, help line and limits live (the same table
 * feeds --help, --print-config and knit_flags_write_docs()). Defaults are
 * written as text and go through the same parser as every other source, so a
 * default can never disagree with what a user could type.
 *
 * Sources, later ones winning:
 *   default  <  config file(s)  <  environment  <  command line
 *
 *   command line   --name=value, --name value, --name / --no-name (booleans),
 *                  "--" ends the flags; other words are positional arguments.
 *   environment    PREFIX + upper-snake name: prefix "NOTES_" and flag
 *                  "http-max-body" → NOTES_HTTP_MAX_BODY. A variable that
 *                  starts with the prefix but names no flag is an error
 *                  (or a warning with env_unknown_warn).
 *   config file    --config FILE (repeatable; files are read in order).
 *                  "name = value" lines, '#' or ';' comment lines, optional
 *                  INI sections: in section [http] the key "max-body" means
 *                  the flag "http-max-body". '_' in keys is read as '-'.
 *                  A value may be wrapped in double quotes (kept verbatim).
 *                  Parsed by Debian's libinih, hence two limits: a line
 *                  holds at most 197 bytes (longer lines are an error, never
 *                  split), and " ;" inside a value starts a comment.
 *
 * String lists: "a,b,c" in any source; within one source a repeated flag
 * appends, a later source replaces the whole list.
 *
 * Built-in flags (always present, group "general"): --help, --version,
 * --config FILE, --print-config, and the hidden --help-markdown (the
 * knit_flags_write_docs table, so docs are generated from the same defs).
 *
 * Bad input (unknown flag, bad value, missing value, unreadable file) makes
 * knit_flags_parse return KNIT_EBADFLAG with exactly one message, available
 * from knit_flags_error() and already printed to the error stream:
 *
 *   notes: flag --threads: bad value "x" from argv: expected an integer
 *   notes: flag --threads: bad value "x" from env NOTES_THREADS: expected an integer
 *   notes: flag --threads: bad value "x" from notes.conf:3: expected an integer
 *   notes: flag --threads: missing value from argv: expected an integer
 *   notes: unknown flag --thread from argv (did you mean --threads?)
 *
 * knit_flags_parse_or_exit() turns that into exit status 2 (0 after --help,
 * --version, --print-config).
 *
 * Ownership: the flag set copies nothing from the def tables — they must
 * outlive it (they are normally static const). String values returned by the
 * getters belong to the set: valid until knit_flags_free() (values replaced
 * at run time are kept until then too, so a reader never holds a dangling
 * pointer).
 *
 * Threads: build and parse before starting threads. At run time the getters
 * and knit_flags_set() are [reactor]: the manhole and the service tree call
 * them on the reactor thread. Bound variables (def.bind) are written by the
 * same calls.
 */
#ifndef KNIT_FLAG_H
#define KNIT_FLAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "knit/clock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits ---------------------------------------------------------------- */

#define KNIT_FLAG_NAME_MAX 63    /* longest flag name */
#define KNIT_FLAG_ERROR_MAX 512  /* longest error message (truncated past it) */
#define KNIT_FLAG_CONFIG_MAX 16  /* --config files per parse */
#define KNIT_FLAG_LINE_MAX 197   /* longest config-file line (libinih's buffer) */
#define KNIT_FLAG_SUGGEST_DIST 2 /* "did you mean" edit-distance limit */

typedef enum knit_flag_type {
    KNIT_FLAG_STRING = 0,
    KNIT_FLAG_INT64,
    KNIT_FLAG_UINT64,
    KNIT_FLAG_DOUBLE,
    KNIT_FLAG_BOOL,
    KNIT_FLAG_DURATION, /* knit_duration ns: "250ms", "5s", "1m30s", "1h", "0" */
    KNIT_FLAG_BYTES,    /* uint64_t bytes: "512", "64KiB", "10MB", "1GiB" */
    KNIT_FLAG_ENUM,     /* one of def.choices; stored as the index */
    KNIT_FLAG_LIST,     /* list of strings, "a,b,c" */
    KNIT_FLAG_ENDPOINT, /* string validated as an endpoint description */
} knit_flag_type;

typedef enum knit_flag_source {
    KNIT_FLAG_SRC_DEFAULT = 0,
    KNIT_FLAG_SRC_FILE,
    KNIT_FLAG_SRC_ENV,
    KNIT_FLAG_SRC_ARGV,
    KNIT_FLAG_SRC_RUNTIME, /* knit_flags_set() after parsing */
} knit_flag_source;

/* def.opts bits */
enum {
    KNIT_FLAG_MUTABLE = 1u << 0, /* may be changed at run time by knit_flags_set */
    KNIT_FLAG_HIDDEN = 1u << 1,  /* left out of --help (still in --print-config) */
};

/* A validator for one flag, run after the type's own parsing (on the text).
 * Return 0 to accept; otherwise a negative code and a short reason in WHY
 * (e.g. "unknown endpoint type \"foo\""); it is appended to the "expected"
 * part of the message. */
typedef int (*knit_flag_validate_fn)(const char *text, char *why, size_t whylen, void *arg);

typedef struct knit_flags knit_flags;
typedef struct knit_flag knit_flag;

/* Called after knit_flags_set() changed a mutable flag (not during parse). */
typedef void (*knit_flag_changed_fn)(knit_flags *fs, const knit_flag *f, void *arg);

/* One flag, as a module declares it (normally in a static const table). */
typedef struct knit_flag_def {
    const char *name; /* lowercase letters, digits, '-'; starts with a letter */
    knit_flag_type type;
    const char *def;                /* default as text; NULL = "" (0, false, empty) */
    const char *help;               /* one line */
    const char *const *choices;     /* ENUM: NULL-terminated list of allowed words */
    unsigned opts;                  /* KNIT_FLAG_MUTABLE | KNIT_FLAG_HIDDEN */
    knit_flag_validate_fn validate; /* optional extra check */
    void *validate_arg;
    knit_flag_changed_fn changed; /* optional, for mutable flags */
    void *changed_arg;
    /* Optional variable kept equal to the value: const char ** (STRING,
     * ENDPOINT), int64_t * (INT64, DURATION), uint64_t * (UINT64, BYTES),
     * double *, bool *, int * (ENUM index). Not for LIST. */
    void *bind;
    const char *metavar; /* optional placeholder in --help ("FILE"); default from the type */
} knit_flag_def;

/* Shorthands for tables: KNIT_FLAG_DEF(name, type, default, help, ...more fields). */
#define KNIT_FLAG_DEF(n, t, d, h, ...)                                                             \
    {                                                                                              \
        .name = (n), .type = (t), .def = (d), .help = (h), __VA_ARGS__                             \
    }

/* ---- the flag set ------------------------------------------------------------ */

typedef struct knit_flags_options {
    const char *program;    /* for messages and --help; default "program" */
    const char *version;    /* printed by --version; default "unknown" */
    const char *env_prefix; /* "NOTES_"; NULL or "" = environment not read */
    /* A variable with the prefix that names no flag is an error (exit 2) by
     * default; set this to log a warning instead, e.g. under Kubernetes,
     * whose service links add NOTES_PORT, NOTES_SERVICE_HOST, ... */
    bool env_unknown_warn;
    const char *summary;    /* one paragraph printed under the usage line */
    const char *args_usage; /* positional part of the usage line, e.g. "[FILE...]";
                               NULL = positional arguments are an error */
    FILE *out;              /* --help/--version/--print-config; default stdout */
    FILE *err;              /* error messages; default stderr */
} knit_flags_options;

void knit_flags_options_init(knit_flags_options *o);

/* Create a flag set holding the built-in flags. opts may be NULL (strings in
 * it are not copied: they must outlive the set). Returns 0 or KNIT_ENOMEM. */
int knit_flags_new(knit_flags **out, const knit_flags_options *opts);
void knit_flags_free(knit_flags *fs);

/* Add the N flags of DEFS as a group (n = (size_t)-1: DEFS ends with an
 * entry whose name is NULL). Adding to an existing GROUP appends to it.
 * The flags keep pointers into DEFS. GROUP names the group ("http"),
 * TITLE heads it in --help ("HTTP server"). Each default is parsed now;
 * a bad default, a bad name or a duplicate name returns KNIT_EBADFLAG with
 * the message in knit_flags_error() — a programming error, caught in tests. */
int knit_flags_add(knit_flags *fs, const char *group, const char *title, const knit_flag_def *defs,
                   size_t n);

/* Parse the sources (config files named by --config, ENVP — NULL means
 * `environ` — and ARGV[1..ARGC-1]) in precedence order.
 * Returns 0 (go on), KNIT_FLAGS_EXIT (help, version or print-config was
 * printed: exit 0) or KNIT_EBADFLAG (message printed; exit 2). May be called
 * once per set. */
#define KNIT_FLAGS_EXIT 1
int knit_flags_parse(knit_flags *fs, int argc, char **argv, char **envp);

/* knit_flags_parse, then exit(0) after KNIT_FLAGS_EXIT and exit(2) after an
 * error (after knit_flags_free). Returns only when the program should go on. */
void knit_flags_parse_or_exit(knit_flags *fs, int argc, char **argv);

/* The last error message ("" if none). Valid until the next call on FS. */
const char *knit_flags_error(const knit_flags *fs);

/* Positional arguments left after parsing (only when args_usage was set). */
char **knit_flags_args(const knit_flags *fs, int *argc);

/* Write --help text, the effective configuration (--print-config; the output
 * is itself a valid config file), or a Markdown table of every flag for the
 * docs. */
void knit_flags_write_help(const knit_flags *fs, FILE *out);
void knit_flags_write_config(const knit_flags *fs, FILE *out);
void knit_flags_write_docs(const knit_flags *fs, FILE *out);

/* ---- run-time access [reactor] -------------------------------------------- */

/* Find a flag by name (NULL if none). */
const knit_flag *knit_flags_find(const knit_flags *fs, const char *name);

/* Typed reads. Asking for a name that does not exist or has another type is
 * a programming error: it returns the zero value ("", 0, false, NULL) and
 * logs a warning. */
const char *knit_flags_string(const knit_flags *fs, const char *name); /* STRING, ENDPOINT, ENUM */
int64_t knit_flags_int64(const knit_flags *fs, const char *name);
uint64_t knit_flags_uint64(const knit_flags *fs, const char *name); /* UINT64, BYTES */
double knit_flags_double(const knit_flags *fs, const char *name);
bool knit_flags_bool(const knit_flags *fs, const char *name);
knit_duration knit_flags_duration(const knit_flags *fs, const char *name);
int knit_flags_enum(const knit_flags *fs, const char *name); /* index into choices */
/* LIST: the items (NULL-terminated array) and their count. */
const char *const *knit_flags_list(const knit_flags *fs, const char *name, size_t *n);

/* Change a flag at run time, parsed and validated exactly as on the command
 * line. Returns 0; KNIT_ENOTFOUND (no such flag), KNIT_EPERM (not mutable) or
 * KNIT_EBADFLAG (bad value); the message is in knit_flags_error(). On
 * success the def's `changed` callback runs. */
int knit_flags_set(knit_flags *fs, const char *name, const char *value);

/* Visit every flag in registration order. */
typedef void (*knit_flag_visit_fn)(const knit_flag *f, void *arg);
void knit_flags_visit(const knit_flags *fs, knit_flag_visit_fn fn, void *arg);

/* Accessors for one flag. */
const knit_flag_def *knit_flag_def_of(const knit_flag *f);
const char *knit_flag_group(const knit_flag *f);
knit_flag_source knit_flag_source_of(const knit_flag *f);
/* Where the value came from: "default", "notes.conf:3", "env NOTES_X",
 * "argv", "runtime". Static or owned by the set. */
const char *knit_flag_origin(const knit_flag *f);
/* The value as text, in the form a config file would accept
 * ("1m30s", "64KiB", "a,b"). Returns the length it needed (like snprintf). */
int knit_flag_format(const knit_flag *f, char *buf, size_t len);

const char *knit_flag_type_name(knit_flag_type t); /* "duration", ... */

/* ---- value parsers (also used by other modules and the fuzzer) [any] ------ */

/* "1h2m3.5s", "250ms", "100us", "10ns", "0". Units h, m, s, ms, us (or µs),
 * ns; a bare number is an error unless it is 0. No sign. Returns 0 or
 * KNIT_EPARSE / KNIT_ERANGE. */
int knit_parse_duration(const char *s, knit_duration *out);
/* "512", "512B", "64KiB", "10MB", "1.5GiB" (fractions round down). Unit
 * letters are case-insensitive: k/kib, m/mib, g/gib, t/tib are powers of
 * 1024; kb, mb, gb, tb powers of 1000; b or nothing means bytes. Returns 0 or
 * KNIT_EPARSE / KNIT_ERANGE. */
int knit_parse_bytes(const char *s, uint64_t *out);
/* Decimal integers only (no 0x, no leading '+'). */
int knit_parse_int64(const char *s, int64_t *out);
int knit_parse_uint64(const char *s, uint64_t *out);
/* Finite numbers strtod accepts (no nan/inf). */
int knit_parse_double(const char *s, double *out);
/* true/false, yes/no, on/off, 1/0 (any case). */
int knit_parse_bool(const char *s, bool *out);

/* Canonical text for a duration ("1m30s", "250ms", "0s") and a byte size
 * ("64KiB", "10MB", "1000"). Return snprintf-style lengths. */
int knit_format_duration(knit_duration d, char *buf, size_t len);
int knit_format_bytes(uint64_t n, char *buf, size_t len);

/* The check the ENDPOINT type runs (knit_endpoint_check from
 * knit/endpoint.h, as a server string). For a client string set the def's
 * validate = knit_flag_validate_endpoint and
 * validate_arg = (void *)KNIT_FLAG_ENDPOINT_CLIENT. */
#define KNIT_FLAG_ENDPOINT_CLIENT 1
int knit_flag_validate_endpoint(const char *text, char *why, size_t whylen, void *arg);

/* ---- in the manhole ---------------------------------------------------------
 *
 * Register flags([name]) and flags.set(name, value) into manhole M's
 * registry (knit/manhole.h, "the registry"), with FS as their data:
 *   flags()          {name = {value, type, source, origin, mutable, group}}
 *   flags(name)      one flag's value as text
 *   flags.set(n, v)  knit_flags_set (validated as on the command line; the
 *                    change or refusal is logged with who asked)
 * FS is borrowed: it must stay valid while M's sessions can call them (until
 * knit_manhole_free); NULL makes them answer "no flag set attached".
 * Attaching again replaces FS for sessions started afterwards. Returns 0 or
 * KNIT_ENOMEM. Built only with the manhole module. [reactor] (the manhole's
 * thread)
 * The function is named for the manhole it extends but lives here: flag
 * sits above the manhole in DESIGN.md's layers, so it registers itself. */
struct knit_manhole;
int knit_manhole_attach_flags(struct knit_manhole *m, knit_flags *fs);

#ifdef __cplusplus
}
#endif
#endif
