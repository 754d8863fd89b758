/* service/app_int.h — what knit_main's app shares with app_extras.c. */
#ifndef KNIT_SERVICE_APP_INT_H
#define KNIT_SERVICE_APP_INT_H

#include "knit/service.h"

struct knit__app_extras;
/* Where the app keeps its extras (NULL until knit_app_http/manhole). */
struct knit__app_extras **knit__app_extras(knit_app *app);
const char *knit__app_program(const knit_app *app);
/* Free the manhole and the HTTP servers (after the loop, before the pool). */
void knit__app_extras_free(knit_app *app);

#endif
