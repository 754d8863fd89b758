// The notes service's Thrift API (examples/notes, issue 8): the same notes, the
// same SQLite store and the same worker pool as the HTTP JSON API, served by
// knit-notes on --thrift (default tcp:9090:interface=127.0.0.1). One port takes
// framed and unframed transports, binary and compact protocols, and SASL PLAIN
// when --thrift-sasl=plain. docs/notes.md has a python3-thrift example.
//
// Names: Thrift reserves `list` (a type), `delete` and `next` (keywords of some
// target languages), so the listing is `list_notes`, deletion is `remove` and
// the page's cursor is `next_after`.
//
// Every error a client can cause is a declared exception whose message is the one
// the HTTP API puts in its {"error": ...} body ("text must not be empty",
// "no note with id 7", ...). Anything else (a database error, out of memory)
// is a TApplicationException INTERNAL_ERROR (6); a full worker queue is
// TApplicationException LOADSHEDDING (11).
namespace py notes
namespace cpp notes

// A stored note: the JSON note's fields. Times are RFC 3339 in UTC with
// milliseconds ("2026-11-26T11:40:34.123Z"), exactly as in JSON.
struct Note {
  1: i64 id,
  2: string text,
  3: list<string> tags,
  4: string created_at,
  // Absent when the note never expires (JSON: null).
  5: optional string expires_at,
}

// What create and update write (the JSON request body). text is required and
// not empty; at most 32 tags, each 1 to 64 bytes; ttl_seconds 1..316224000
// (ten years). Strings must be UTF-8 without NUL characters.
struct NoteInput {
  1: string text,
  2: optional list<string> tags,
  // create: absent = never expires; update: absent = the expiry is unchanged.
  3: optional i64 ttl_seconds,
}

// One page of list_notes: notes in id order. next_after (JSON: "next", a name
// Thrift reserves) is absent on the last page; otherwise pass it as `after` to
// get the next one.
struct NotePage {
  1: list<Note> notes,
  2: optional i64 next_after,
}

// No note with that id (or it expired). HTTP: 404.
exception NotFound {
  1: string message,
  2: i64 id,
}

// A field or argument is invalid; message names it. HTTP: 400.
exception BadRequest {
  1: string message,
}

// The database stayed locked, its disk is full, or the service is stopping:
// retry after retry_after_seconds. HTTP: 503 with Retry-After.
exception Unavailable {
  1: string message,
  2: i32 retry_after_seconds = 1,
}

service Notes {
  // Store a new note; returns it as stored (HTTP: POST /notes).
  Note create(1: NoteInput note) throws (1: BadRequest bad, 2: Unavailable unavailable),

  // A live note by id (HTTP: GET /notes/{id}).
  Note get(1: i64 id)
    throws (1: NotFound not_found, 2: BadRequest bad, 3: Unavailable unavailable),

  // Live notes with id > after, in id order, at most limit (1..1000); only
  // those tagged `tag` unless it is empty (HTTP: GET /notes?tag=&limit=&after=).
  NotePage list_notes(1: string tag = "", 2: i32 limit = 50, 3: i64 after = 0)
    throws (1: BadRequest bad, 2: Unavailable unavailable),

  // Replace text and tags (and the expiry when ttl_seconds is given); returns
  // the note (HTTP: PUT /notes/{id}).
  Note update(1: i64 id, 2: NoteInput note)
    throws (1: NotFound not_found, 2: BadRequest bad, 3: Unavailable unavailable),

  // Delete a live note (HTTP: DELETE /notes/{id}).
  void remove(1: i64 id)
    throws (1: NotFound not_found, 2: BadRequest bad, 3: Unavailable unavailable),
}
