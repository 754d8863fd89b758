/* ssh.c — the manhole over SSH (libssh server). Not written yet. */
#include "manhole/internal.h"

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"

int knit__manhole_ssh_listen(knit_manhole *m, const knit_endpoint_desc *d, void **out);
void knit__manhole_ssh_close(void *ssh);

int knit__manhole_ssh_listen(knit_manhole *m, const knit_endpoint_desc *d, void **out)
{
    (void)m;
    (void)d;
    *out = NULL;
    KNIT_ERROR("manhole", "ssh: endpoints are not implemented yet");
    return KNIT_ENOTSUP;
}

void knit__manhole_ssh_close(void *ssh) { (void)ssh; }
