/* server.c — transports (placeholder while the core lands). */
#include "manhole/internal.h"

#include "knit/error.h"

void knit__manhole_close_transports(knit_manhole *m) { (void)m; }
int knit_manhole_listen(knit_manhole *m, const char *endpoint) { (void)m; (void)endpoint; return KNIT_ENOSYS; }
int knit_manhole_ssh_port(const knit_manhole *m) { return m->ssh_port; }
size_t knit_manhole_connection_count(const knit_manhole *m) { return m->nconns; }
