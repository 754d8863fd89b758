/* suggest.c — "did you mean": the closest flag name to an unknown one, by
 * edit distance (KNIT_FLAG_SUGGEST_DIST, or a third of the name's length),
 * for the messages of every source and of knit_flags_set.
 */
#include "flag/flag_int.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Levenshtein distance, capped inputs (names are short). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* The closest flag name to NAME (a bool also as "no-NAME"), or NULL. */
const char *knit__flag_suggest(const knit_flags *fs, const char *name, bool *negated)
{
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    size_t l = strlen(name);
    *negated = false;
    /* "--no-threads" for a non-boolean: point at the flag itself. */
    if (strncmp(name, "no-", 3) == 0 && knit__flag_find(fs, name + 3))
        return knit__flag_find(fs, name + 3)->def->name;
    size_t limit = l / 3 > KNIT_FLAG_SUGGEST_DIST ? l / 3 : KNIT_FLAG_SUGGEST_DIST;
    *negated = false;
    for (size_t i = 0; i < fs->n; i++) {
        const knit_flag *f = fs->flags[i];
        size_t d = edit_distance(name, f->def->name);
        if (d < bestd && d <= limit) {
            best = f->def->name;
            bestd = d;
            *negated = false;
        }
        if (f->def->type == KNIT_FLAG_BOOL && strncmp(name, "no", 2) == 0) {
            char neg[KNIT_FLAG_NAME_MAX + 8];
            snprintf(neg, sizeof neg, "no-%s", f->def->name);
            d = edit_distance(name, neg);
            if (d < bestd && d <= limit) {
                best = f->def->name;
                bestd = d;
                *negated = true;
            }
        }
    }
    return best;
}
