/* client.c — the Thrift client over knit streams.
 *
 * Not written yet: it needs the stream/endpoint module (see
 * docs/requests/thrift-needs.md). Until then the generated client stubs link
 * and report KNIT_ENOSYS.
 */
#include "knit/thrift.h"

int knit_thrift_client_call(knit_thrift_client *c, const knit_thrift_method *m, const void *args,
                            knit_deferred **out)
{
    (void)c;
    (void)m;
    (void)args;
    *out = NULL;
    return KNIT_ENOSYS;
}

int knit_thrift_client_call_sync(knit_thrift_client *c, const knit_thrift_method *m,
                                 const void *args, void *res)
{
    (void)c;
    (void)m;
    (void)args;
    (void)res;
    return KNIT_ENOSYS;
}
