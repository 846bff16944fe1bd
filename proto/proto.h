/* proto: the msgpack schema v1 of job, result and event (docs/protocol.md), with a strict decoder
 * that reports a specific error code for every kind of bad input, and encoders.
 * No I/O. All functions are pure and may run on any thread. */
#ifndef SQ_PROTO_H
#define SQ_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQ_PROTO_VERSION 1
#define SQ_PROTO_MAX_ID 128
#define SQ_PROTO_MAX_MODEL 64
#define SQ_PROTO_MAX_TENANT 64
#define SQ_PROTO_MAX_IMAGE_BYTES (64u << 20)
#define SQ_PROTO_MAX_SIDE 16384
#define SQ_PROTO_MAX_PIXELS (64u << 20)
#define SQ_PROTO_MAX_META (64u << 10)
#define SQ_PROTO_MAX_MEMBERS 8 /* ensemble members ("models") */

/* X(id, value, wire name, channels, bytes per sample) of every image.format (docs/protocol.md).
 * Raw formats are row-major, samples interleaved (RGB), 16-bit little-endian; jpeg's layout comes
 * from the JPEG (0, 0 here). Append only, never renumber. */
#define SQ_IMAGE_FORMATS(X)             \
  X(SQ_IMAGE_JPEG, 1, "jpeg", 0, 0)     \
  X(SQ_IMAGE_GRAY8, 2, "gray8", 1, 1)   \
  X(SQ_IMAGE_GRAY16, 3, "gray16", 1, 2) \
  X(SQ_IMAGE_RGB8, 4, "rgb8", 3, 1)     \
  X(SQ_IMAGE_RGB16, 5, "rgb16", 3, 2)

typedef enum {
#define SQ_X_IMAGE_ENUM(id, value, name, channels, bytes) id = value,
  SQ_IMAGE_FORMATS(SQ_X_IMAGE_ENUM)
#undef SQ_X_IMAGE_ENUM
} sq_image_format_t;

/* The wire name of format, or NULL for a value outside the table. */
const char *sq_proto_image_format_name(sq_image_format_t format);
/* Channels and bytes per sample of a raw format (0 and 0 for jpeg and unknown values). */
void sq_proto_image_format_layout(sq_image_format_t format, uint32_t *channels,
                                  uint32_t *bytes_per_sample);

enum { SQ_OUTPUT_POLYGONS = 1, SQ_OUTPUT_MASK = 2 };

/* params.input_range.mode (docs/protocol.md); NONE = absent: the model's own policy. */
typedef enum {
  SQ_PROTO_RANGE_NONE = 0,
  SQ_PROTO_RANGE_FIXED,
  SQ_PROTO_RANGE_FULL,
  SQ_PROTO_RANGE_PERCENTILE
} sq_proto_range_mode_t;

/* A decoded job. Owns every pointer in it (copied out of the input buffer), so it outlives the
 * buffer it was decoded from. Free with sq_proto_job_free. */
typedef struct {
  char *id;
  char *model;
  char *tenant; /* never NULL after decode: "default" when absent */
  char *group;  /* NULL when absent */
  int64_t priority;
  uint64_t deadline_ms; /* 0 = none */
  sq_image_format_t image_format;
  uint8_t *image_data;
  size_t image_size;
  uint32_t width, height; /* raw formats: from the job; jpeg: 0 until decoded */
  int has_threshold;
  float threshold;
  int has_min_area;
  uint32_t min_area;
  unsigned outputs; /* SQ_OUTPUT_* bits; default SQ_OUTPUT_POLYGONS */
  /* params.input_range: how sample values map to model input (gpu.h sq_input_range_t). low/high
   * (percentile, default 1 and 99.8) and bits (full, default 16) are set to their defaults when
   * absent; mode NONE leaves the model's policy. */
  sq_proto_range_mode_t input_range_mode;
  float input_range_low, input_range_high;
  uint32_t input_range_bits;
  uint8_t *meta; /* the meta object re-encoded as msgpack; NULL when absent */
  size_t meta_size;
  /* Ensemble ("models", docs/protocol.md "Ensembles"): 0 = a single-model job; otherwise
   * 2..SQ_PROTO_MAX_MEMBERS distinct names, `model` among them, weights finite, >= 0 (default 1)
   * and not all 0. */
  size_t nmembers;
  char *member_names[SQ_PROTO_MAX_MEMBERS];
  float member_weights[SQ_PROTO_MAX_MEMBERS];
} sq_job_t;

/* Strict decode. Returns 0 or a negative code (SQ_EMALFORMED, SQ_EVERSION, SQ_ETYPE, SQ_EMISSING,
 * SQ_EOVERSIZE, SQ_EVALUE; SQ_ENOMEM only if malloc fails); err->msg names the field. On error
 * *job is left zeroed. Even on error job->id is filled when the id could be read (a str in the id
 * alphabet), so the error result can name it: call sq_proto_job_free after an error too.
 * Safe on any bytes: the input is scanned before msgpack-c allocates anything for it. */
int sq_proto_job_decode(const void *buf, size_t len, sq_job_t *job, sq_error_t *err);
void sq_proto_job_free(sq_job_t *job);

/* Encodes a job (used by tests, benchmarks and tools; the Python client has its own encoder).
 * Returns a malloc'd buffer the caller frees, or NULL (no id or model, bad image_format, or no
 * memory). job->meta must be one msgpack object; it is written verbatim. */
uint8_t *sq_proto_job_encode(const sq_job_t *job, size_t *out_len);

typedef struct {
  uint64_t queue_wait_us, decode_us, inference_us, postprocess_us, total_us;
} sq_timings_t;

/* A result to encode. Borrowed pointers: the encoder copies nothing it does not write out. */
typedef struct {
  const char *id;
  int error_code;            /* 0 = ok */
  const char *error_message; /* for errors */
  const char *model;         /* may be NULL */
  uint32_t width, height;
  const sq_polygon_t *polygons;
  size_t npolygons;
  const uint8_t *mask; /* width*height bytes, 0/1; NULL = no mask in the result */
  sq_timings_t timings;
  const char *worker;
  uint32_t batch_size;
  uint32_t attempt;
  const uint8_t *meta; /* msgpack bytes copied verbatim; NULL = absent */
  size_t meta_size;
} sq_result_t;

/* Returns a malloc'd buffer the caller frees, or NULL (res->id NULL, or no memory). error_code is
 * written as its protocol name (sq_error_name); a NULL error_message uses sq_error_text. */
uint8_t *sq_proto_result_encode(const sq_result_t *res, size_t *out_len);

/* A decoded result (for tests and tools). Owns its memory; free with sq_proto_result_decoded_free.
 * sq_proto_result_decode returns 0 or a negative code like the job decoder; on error *res is
 * zeroed. The result's meta is not decoded. */
typedef struct {
  char *id;
  int ok;
  char *error_code; /* NULL when ok */
  char *error_message;
  char *model;
  uint32_t width, height;
  sq_polygon_t *polygons;
  size_t npolygons;
  uint8_t *mask; /* decoded from RLE; NULL if absent */
  sq_timings_t timings;
  char *worker;
  uint32_t batch_size, attempt;
} sq_result_decoded_t;

int sq_proto_result_decode(const void *buf, size_t len, sq_result_decoded_t *res, sq_error_t *err);
void sq_proto_result_decoded_free(sq_result_decoded_t *res);

/* Checks the id alphabet [A-Za-z0-9._:-] and length 1..max. Returns 1 if valid, 0 if not. */
int sq_proto_valid_name(const char *s, size_t len, size_t max);

#ifdef __cplusplus
}
#endif
#endif
