/* stream/output_group.c — output groups (knit/stream.h): the bytes queued by
 * every transport of one protocol's group (the HTTP server's output budget),
 * and the group's water marks. Split from transport.c, which calls
 * knit__transport_out_changed on every change of a transport's output and
 * knit__transport_out_leave before connection_lost.
 *
 * Threads: the transports' reactor thread; a group's owner may let other
 * threads read `queued` (atomic).
 */
#include "stream/stream_int.h"

static void group_add(knit_output_group *g, size_t before, size_t after)
{
    /* never below 0: BEFORE was counted. An atomic store: a group's owner
     * may let other threads read queued (the HTTP server's stats). */
    __atomic_store_n(&g->queued, g->queued - before + after, __ATOMIC_RELAXED);
    if (!g->over && g->high && g->queued > g->high) {
        g->over = true;
        if (g->changed) g->changed(g, true);
    } else if (g->over && g->queued <= g->low) {
        g->over = false;
        if (g->changed) g->changed(g, false);
    }
}

void knit__transport_out_changed(knit_transport *t, size_t before)
{
    knit_output_group *g = t->proto ? t->proto->output_group : NULL;
    size_t after = knit__out_len(t);
    if (g && after != before) group_add(g, before, after);
}

void knit__transport_out_leave(knit_transport *t)
{
    knit_output_group *g = t->proto ? t->proto->output_group : NULL;
    size_t len = knit__out_len(t);
    if (g && len) group_add(g, len, 0);
}
