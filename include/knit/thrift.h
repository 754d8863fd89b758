/* knit/thrift.h — Apache Thrift for knit: the binary and compact protocols,
 * framing and transport detection, TApplicationException, the runtime used by
 * knit-thriftc's generated code, the SASL transport, the half-sync/half-async
 * server and the pipelining client.
 *
 * One include for users, one header per concern inside (each says at its top
 * what it holds, its threads and who owns what, and compiles on its own):
 *
 *   knit/thrift/proto.h    codecs: writer/reader, TApplicationException,
 *                          framing, transport detection         [any]
 *   knit/thrift/runtime.h  knit_tstr, method descriptors, processors,
 *                          knit_thrift_process, call/reply envelopes  [any]
 *   knit/thrift/sasl.h     SASL negotiation state machine, wrap/unwrap
 *                                                               one thread per object
 *   knit/thrift/server.h   knit_thrift_server_*                 [reactor]
 *   knit/thrift/client.h   knit_thrift_client_*                 [reactor] / _sync [worker]
 *
 * Generated code: tools/knit-thriftc turns an IDL file into C structs with
 * init/free/copy/equal/read/write, a handler vtable, a processor and client
 * stubs per service (see the comment at the top of any NAME_thrift.h). Its
 * files include this header and call only public names.
 */
#ifndef KNIT_THRIFT_H
#define KNIT_THRIFT_H

#include "knit/thrift/client.h"
#include "knit/thrift/proto.h"
#include "knit/thrift/runtime.h"
#include "knit/thrift/sasl.h"
#include "knit/thrift/server.h"

#endif
