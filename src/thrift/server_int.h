/* thrift/server_int.h — between the Thrift server (server.c) and its HTTP
 * route (http.c). Internal to the thrift module. [reactor] */
#ifndef KNIT_THRIFT_SERVER_INT_H
#define KNIT_THRIFT_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "knit/http.h"
#include "knit/thrift/header.h"
#include "knit/thrift/server.h"

/* server.c: dispatch the message (or length-prefixed THeader frame) in an
 * HTTP request body. 0: the request will be answered (now or when the call
 * completes); negative: not a Thrift message (the caller answers 400). */
int knit__thrift_server_http_call(knit_thrift_server *s, knit_http_request *req,
                                  const uint8_t *body, size_t len);
size_t knit__thrift_server_max_message(const knit_thrift_server *s);
knit_duration knit__thrift_server_queue_timeout(const knit_thrift_server *s);

/* http.c: answer REQ with a Thrift reply (200, the protocol's content type),
 * or with an HTTP error. */
void knit__thrift_http_reply(knit_http_request *req, knit_thrift_proto proto, const void *body,
                             size_t len);
void knit__thrift_http_fail(knit_http_request *req, int status, const char *why);

#endif
