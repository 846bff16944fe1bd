/* gpu: the models a worker runs, behind one interface. Built-in CPU models (`null`, `otsu`) now;
 * the ONNX engine with its cpu/cuda backends plugs in behind the same sq_model_t.
 * Also the shared postprocessing: mask -> polygons.
 * Never includes libuv, hiredis or proto. Thread notes on each function. */
#ifndef SQ_GPU_H
#define SQ_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A decoded image, row-major, interleaved channels. Owns data. */
typedef struct {
  uint32_t width, height;
  uint32_t channels;         /* 1 (gray) or 3 (RGB) */
  uint32_t bytes_per_sample; /* 1 (8-bit) or 2 (16-bit, native endian) */
  uint8_t *data;
} sq_image_t;

void sq_image_free(sq_image_t *img); /* frees data, zeroes the struct */

/* Decodes a JPEG into out (8-bit; `channels` 1 = grayscale, 3 = RGB). The header is read first:
 * a zero width/height is SQ_EIMAGE_EMPTY, a side over max_side or more than max_pixels pixels is
 * SQ_EIMAGE_TOO_LARGE (0 = no limit), both before any pixel buffer is allocated. Truncated or
 * corrupt data is SQ_EIMAGE_DECODE (libjpeg warnings, e.g. premature end of data, count as
 * errors); CMYK/YCCK JPEGs are SQ_EIMAGE_FORMAT. On success out owns a malloc'd buffer (free
 * with sq_image_free); on error out is zeroed. Any thread (one TurboJPEG handle per call). */
int sq_image_decode_jpeg(const uint8_t *data, size_t len, uint32_t max_side, uint64_t max_pixels,
                         uint32_t channels, sq_image_t *out, sq_error_t *err);

/* Copies a raw row-major grayscale image into out: bytes_per_sample 1 (gray8) or 2 (gray16,
 * little-endian input, native endian in out). Zero width/height is SQ_EIMAGE_EMPTY, another
 * bytes_per_sample SQ_EIMAGE_FORMAT, len != w*h*bytes_per_sample SQ_EVALUE. Any thread. */
int sq_image_from_raw(const uint8_t *data, size_t len, uint32_t w, uint32_t h,
                      uint32_t bytes_per_sample, sq_image_t *out, sq_error_t *err);
/* The same for 1 (gray) or 3 (RGB, samples interleaved R G B) channels: rgb8 and rgb16 jobs.
 * Another channel count is SQ_EIMAGE_FORMAT; len != w*h*channels*bytes_per_sample SQ_EVALUE. */
int sq_image_from_raw_channels(const uint8_t *data, size_t len, uint32_t w, uint32_t h,
                               uint32_t channels, uint32_t bytes_per_sample, sq_image_t *out,
                               sq_error_t *err);

/* Input range policy (docs/models.md "Input range"): how an image's sample values become model
 * input before mean/std, as x = v * scale + offset with scale and offset resolved per image. A
 * model.json sets one (normalization.range, default fixed); a job may replace it
 * (params.input_range). */
typedef enum {
  SQ_RANGE_FIXED = 0, /* scale (8-bit samples) or scale_16bit (16-bit), offset 0 */
  SQ_RANGE_FULL,      /* [0, 2^bits - 1] -> [0, 1]: 8-bit images 1/255, 16-bit 1/(2^bits - 1) */
  SQ_RANGE_PERCENTILE /* the image's low-th and high-th percentile -> 0 and 1 (not clipped) */
} sq_range_mode_t;

typedef struct {
  sq_range_mode_t mode;
  float scale, scale_16bit; /* fixed */
  uint32_t bits;            /* full: significant bits of 16-bit samples, 1..16 (default 16) */
  float low, high;          /* percentile: 0 <= low < high <= 100 (default 1 and 99.8) */
} sq_input_range_t;

/* The defaults of each mode: fixed 1/255 and 1/(255*257), bits 16, percentiles 1 and 99.8. */
void sq_input_range_default(sq_input_range_t *r, sq_range_mode_t mode);
/* "fixed(scale=0.00392,scale_16bit=1.53e-05)", "full(bits=12)", "percentile(1,99.8)": for logs. */
void sq_input_range_describe(const sq_input_range_t *r, char *buf, size_t cap);
/* Resolves r for one image: x = v * *scale + *offset. Percentiles are over every sample of img
 * (all channels), linearly interpolated between ranks like numpy.percentile; an image with no
 * contrast there (p_high == p_low) maps p_low to 0 with the full-range scale. Returns 0, or
 * SQ_EINVAL for a policy out of range, SQ_ENOMEM. Any thread; reads img once (percentile). */
int sq_input_range_resolve(const sq_input_range_t *r, const sq_image_t *img, float *scale,
                           float *offset, sq_error_t *err);

/* Per-job postprocessing parameters, already resolved against the model's defaults. */
typedef struct {
  float threshold;
  uint32_t min_area;
} sq_postparams_t;

/* Static facts about a loaded model, read by the batching stage and the worker. */
typedef struct {
  char name[64];
  uint32_t max_batch;    /* batching stage flushes at this size */
  uint64_t max_delay_us; /* ... or when the oldest job waited this long */
  float default_threshold;
  uint32_t default_min_area;
  uint32_t contexts;       /* executor contexts (streams) this model may use concurrently:
                            * streams per device x devices */
  uint32_t input_channels; /* what prepare wants: 1 (decode JPEGs to gray) or 3 (RGB); prepare
                            * still accepts either and converts */
  uint32_t tile_w, tile_h; /* the model's input size (one tile); 0 for models of any size */
  uint32_t devices;        /* backends the contexts are spread over (cuda:all: every GPU) */
  int fp16;                /* runs in fp16 (asked for, and the backend computes so) */
  char backend[32];        /* the first context's backend ("cpu", "cuda:0", ...) */
} sq_model_info_t;

typedef struct sq_model sq_model_t;

/* What the worker's flags override of a repository model's model.json. */
typedef struct {
  const char *device;    /* the device grammar (gpu/onnx/engine.h); NULL or "" = "auto" */
  uint32_t streams;      /* executor contexts per device; 0 = model.json "contexts" */
  const char *precision; /* "fp32" or "fp16"; NULL or "" = model.json "precision" */
  uint32_t max_batch;    /* plan up to this many tiles per run; 0 = model.json "max_batch"
                          * (segq-tune measures batches beyond the model's own) */
} sq_model_options_t;

/* 0 when `device` is a valid device string (auto, cpu, cuda, cuda:N, cuda:all, or a backend a
 * test build registered), else SQ_EINVAL with the reason. The one check of the device grammar
 * the worker's configuration uses. Any thread. */
int sq_model_device_check(const char *device, sq_error_t *err);

/* Opens a model by name: built-in `null` and `otsu`, or `<repo_dir>/<name>/`.
 * Returns NULL with err set (SQ_EMODEL_UNKNOWN, SQ_EMODEL_LOAD, SQ_EDEVICE, SQ_EOOM_DEVICE when
 * the device cannot hold the model even at batch 1). Loop thread, at start-up.
 *
 * Built-ins: `null` does no work at all (it measures the queue path): its finish returns
 * *mask == NULL (no foreground). `otsu` converts to gray (RGB -> luma 0.299/0.587/0.114), takes
 * Otsu's threshold over a full 256-bin (8-bit) or 65536-bin (16-bit) histogram and marks the
 * pixels above it (bright objects on a dark background, like fluorescence); it ignores
 * pp->threshold (the threshold is computed per image). Built-ins always run on the CPU. */
sq_model_t *sq_model_open_with(const char *name, const char *repo_dir,
                               const sq_model_options_t *opt, sq_error_t *err);
/* sq_model_open_with with only a device; sq_model_open is this with "cpu". */
sq_model_t *sq_model_open_device(const char *name, const char *repo_dir, const char *device,
                                 sq_error_t *err);
sq_model_t *sq_model_open(const char *name, const char *repo_dir, sq_error_t *err);
/* 1 when name is a built-in model (it never runs on the engine's backends), else 0. */
int sq_model_is_builtin(const char *name);
void sq_model_close(sq_model_t *m);
const sq_model_info_t *sq_model_info(const sq_model_t *m);

/* The stages of a job in a model. Opaque per-job sample and output objects are handed from
 * stage to stage and freed by the stage that consumes them (or by *_free on error paths).
 *
 * warmup:  executor thread of context `ctx`, once, before its first batch: runs every batch size
 *          the context will use (binding plans, choosing algorithms, capturing CUDA graphs), so
 *          no job meets a cold shape. 0, or the error that would fail every batch.
 * prepare: work pool. Turns a decoded image into the model's input (channels, tiles...). pp, when
 *          given, is the job's: a device with image I/O then thresholds there and returns only
 *          the mask; NULL keeps the probabilities for finish (ensemble members).
 * run:     executor thread for context `ctx` (0..contexts-1). Runs n samples as one batch and fills
 *          outputs[0..n-1]. codes[0..n-1] gets each sample's own result: 0, or the error that
 *          failed that sample alone (SQ_EOOM_DEVICE when it does not fit even by itself); such a
 *          sample stays with the caller and gets no output. Returns 0 when every sample either
 *          ran or failed alone, else the error of the whole batch (no output set, every sample
 *          still the caller's). SQ_EDEVICE means the device is poisoned: every later run fails
 *          too (the worker hands the jobs back and exits).
 * finish:  work pool. Turns one output into a mask of the original image size (width*height
 *          bytes, 0/1; malloc'd, caller frees). *mask may be set to NULL, meaning an all-zero
 *          mask of width*height (the null model always does this, to stay free of work);
 *          callers must handle it (sq_polygons_from_mask accepts a NULL mask: no polygons).
 * postprocess: work pool. finish, then the mask as polygons in original image pixels and, when
 *          want_mask, the mask itself (the whole postprocessing a result needs; see
 *          sq_model_result_t).
 *
 * Ownership: prepare gives the caller a sample. A successful run consumes the samples it gave an
 * output and gives the caller those outputs; samples that failed (or all of them, when run fails)
 * stay with the caller. A successful finish/postprocess consumes the output; a failed one leaves
 * it with the caller. */
int sq_model_warmup(sq_model_t *m, int ctx, sq_error_t *err);
int sq_model_prepare(sq_model_t *m, const sq_image_t *img, const sq_postparams_t *pp, void **sample,
                     sq_error_t *err);
/* prepare with a job's input range policy instead of the model's own (range NULL: the model's).
 * A job's "fixed" means the model's own scale and scale_16bit (range->scale* are not used): a
 * job picks a mode, not a model's constants. Built-in models ignore range (their thresholds do
 * not depend on the value scale). */
int sq_model_prepare_range(sq_model_t *m, const sq_image_t *img, const sq_input_range_t *range,
                           const sq_postparams_t *pp, void **sample, sq_error_t *err);
int sq_model_run(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs, int *codes,
                 sq_error_t *err);
int sq_model_finish(sq_model_t *m, void *output, const sq_postparams_t *pp, uint8_t **mask,
                    uint32_t *width, uint32_t *height, sq_error_t *err);
void sq_model_sample_free(sq_model_t *m, void *sample);
void sq_model_output_free(sq_model_t *m, void *output);

/* What a result carries of a job's mask: polygons in original image pixel coordinates, and the
 * mask itself only when asked for and of the original image's size. Free with
 * sq_model_result_free. */
typedef struct {
  uint32_t width, height; /* the mask's size (the original image's for every model we have) */
  sq_polygon_t *polygons;
  size_t npolygons;
  uint8_t *mask; /* width*height 0/1, or NULL */
} sq_model_result_t;
void sq_model_result_free(sq_model_result_t *r);
int sq_model_postprocess(sq_model_t *m, void *output, const sq_postparams_t *pp, int want_mask,
                         sq_model_result_t *res, sq_error_t *err);
/* The same from a mask (NULL = all zero) of mw x mh for an image of img_w x img_h: polygons
 * scaled to image pixels, the mask kept when want_mask and its size is the image's. Consumes
 * mask (kept in res or freed). Work pool. */
int sq_result_from_mask(uint8_t *mask, uint32_t mw, uint32_t mh, uint32_t img_w, uint32_t img_h,
                        const sq_postparams_t *pp, int want_mask, sq_model_result_t *res,
                        sq_error_t *err);

/* Memory and device state of a model, for metrics and logs. Any thread. */
typedef struct {
  uint32_t effective_max_batch;       /* what a run may use now (shrinks under memory pressure) */
  uint64_t oom_splits;                /* batches split in halves after an out-of-memory error */
  uint64_t device_free, device_total; /* the most loaded device's memory, bytes (0: unknown) */
  int pressure;                       /* 0 normal, 1 above 90% used (warned), 2 above 95% */
} sq_model_stats_t;
void sq_model_stats(sq_model_t *m, sq_model_stats_t *out);

/* Validates a model without serving it (segq-worker --check-models): a built-in always passes;
 * a repository model's model.json is checked in full, every problem handed to report (one
 * "<file>: <field>: <what>" each, not only the first), and when it is valid the model is opened
 * on the CPU as at start-up (graph against model.json, planning, unsupported ops), whose error is
 * reported the same way. Returns 0 or the first problem's code (err: a summary). report may be
 * NULL. Needs no Redis and no GPU. Any thread. */
typedef void (*sq_model_problem_fn)(const char *problem, void *data);
int sq_model_check(const char *name, const char *repo_dir, sq_model_problem_fn report, void *data,
                   sq_error_t *err);

/* Progress inside a run (tiled models): the executor thread sets a hook before sq_model_run and
 * clears it (fn NULL) after; during the run the model calls fn(data, sample, done, total) on the
 * same thread each time sample `sample` (an index into that run's samples) has `done` of its
 * `total` steps (tiles) finished. The hook is per thread, so contexts do not share it. Models
 * that do not report leave it uncalled. */
typedef void (*sq_model_progress_fn)(void *data, size_t sample, uint32_t done, uint32_t total);
void sq_model_progress_set(sq_model_progress_fn fn, void *data);
/* Called by models: reports to the calling thread's hook, if any. */
void sq_model_progress_report(size_t sample, uint32_t done, uint32_t total);

/* Ensembles (docs/protocol.md, "Ensembles (proposed)"): several models' probability maps of one
 * image, averaged with weights, then thresholded.
 * sq_model_finish_prob: like sq_model_finish, but *prob is the foreground probability map of the
 * original image size (width*height floats in [0,1], malloc'd, caller frees) before any
 * threshold: an ONNX model's stitched probabilities; built-ins give their mask as 0/1 (null:
 * all 0). Consumes the output on success, like finish. Work pool.
 * sq_prob_combine: mask[i] = (sum_k weights[k] * probs[k][i]) / sum_k weights[k] >= threshold,
 * for n >= 1 maps of npix pixels; weights NULL = all 1; weights must be >= 0 with a positive
 * sum (SQ_EINVAL otherwise). *mask is malloc'd (npix bytes, 0/1). Any thread.
 * sq_ensemble_postprocess: every member's output (outputs[k] of models[k], consumed and set to
 * NULL whether it succeeds or not) as probability maps of one size, combined, then as
 * sq_model_postprocess. Work pool. */
int sq_model_finish_prob(sq_model_t *m, void *output, float **prob, uint32_t *width,
                         uint32_t *height, sq_error_t *err);
int sq_ensemble_postprocess(sq_model_t *const *models, void **outputs, const float *weights,
                            size_t n, const sq_postparams_t *pp, int want_mask,
                            sq_model_result_t *res, sq_error_t *err);
int sq_prob_combine(const float *const *probs, const float *weights, size_t n, size_t npix,
                    float threshold, uint8_t **mask, sq_error_t *err);

/* Mask -> polygons (shared by every model). One polygon per 8-connected foreground component
 * (mask value != 0) with area >= min_area, where area = pixel count * scale_x * scale_y (the area
 * in original image pixels, as the protocol says); outer boundary traced along pixel edges,
 * simplified by Douglas-Peucker with `tolerance` px (0.5 recommended); holes ignored.
 * scale_x/scale_y map mask pixels to original image pixels (1.0 when they are the same).
 * Returns 0 and a malloc'd array (free with sq_polygons_free) or a negative code. Work pool.
 * Polygons come in raster order of their component's first pixel; points run clockwise on screen
 * (y down) starting at the top-left corner of that first pixel. A NULL mask is an empty one:
 * *out = NULL, *count = 0. Labels runs, not pixels, so memory follows the number of runs. */
int sq_polygons_from_mask(const uint8_t *mask, uint32_t width, uint32_t height, uint32_t min_area,
                          float tolerance, float scale_x, float scale_y, sq_polygon_t **out,
                          size_t *count);

/* Otsu's threshold of an 8- or 16-bit histogram; exposed for tests. Returns t maximizing the
 * between-class variance of [0..t] vs (t..nbins-1], so the foreground is `value > t`; a histogram
 * with a single occupied bin (or none) returns that bin (or 0), so nothing is foreground. */
uint32_t sq_otsu_threshold(const uint32_t *hist, uint32_t nbins);

#ifdef __cplusplus
}
#endif
#endif
