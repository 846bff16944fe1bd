/* proto internals shared by the job and result codecs: a structural pre-scan of msgpack bytes and
 * small helpers over msgpack_object. Private to proto/; nothing here is part of the contract. */
#ifndef SQ_PROTO_INTERNAL_H
#define SQ_PROTO_INTERNAL_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/* Deepest container nesting accepted (the root map is depth 1); msgpack-c itself stops at 32. */
#define SQ_PROTO_MAX_DEPTH 16
/* Most msgpack objects (keys and values) in one job document: bounds what msgpack-c allocates. */
#define SQ_PROTO_MAX_JOB_OBJECTS (1u << 17)
/* Results carry a mask RLE that may have one count per pixel. */
#define SQ_PROTO_MAX_RESULT_OBJECTS (SQ_PROTO_MAX_PIXELS + 1024u)

/* Walks buf as exactly one msgpack object without allocating. Fails (SQ_EMALFORMED, with a
 * message) on truncation, trailing bytes, reserved bytes (0xc1), nesting deeper than max_depth or
 * more than max_objects objects. Run before msgpack_unpack_next so that a container header
 * claiming 2^32 elements can never make msgpack-c allocate for elements that are not there. */
int sq_proto_scan(const uint8_t *buf, size_t len, unsigned max_depth, uint64_t max_objects,
                  sq_error_t *err);

/* "uint", "str", ... for messages. */
const char *sq_proto_type_name(const msgpack_object *o);

/* 1 if o is a str equal to the NUL-terminated s. */
int sq_proto_str_is(const msgpack_object *o, const char *s);

/* Writes at most 32 printable characters of a user string into out (size >= 40), replacing
 * others with '?', so error messages never carry control bytes. */
void sq_proto_printable(const char *s, size_t len, char *out, size_t out_size);

/* Packs a NUL-terminated string; returns msgpack's status (0 on success). */
int sq_proto_pack_cstr(msgpack_packer *pk, const char *s);

#endif
