/* vlfront C ABI: the front-end of a Qwen-VL-style model (SPEC §1) in C.
 *
 * Conventions (those of onnxruntime-genai):
 *  - Every object is an opaque handle made by a vlf_*_create* function and
 *    released by the matching vlf_*_destroy, which accepts NULL.
 *  - Functions that can fail return a vlf_status*: NULL on success, otherwise
 *    a status the CALLER OWNS and must release with vlf_status_destroy.
 *    Out-pointers are written only on success.
 *  - No C++ exception crosses this boundary.
 *  - Ownership is stated per parameter: "borrowed" means the callee keeps no
 *    reference after it returns (input) or the caller must not free it and it
 *    lives as long as its owner (output); "owned" means the caller must destroy it.
 *  - Strings are UTF-8. Text takes (pointer, length) and may hold NUL bytes.
 *  - Thread safety: a vlf_runtime, vlf_tokenizer and vlf_batcher may be used
 *    from several threads at once; a vlf_request / vlf_runtime_options must not
 *    be modified while another thread uses it.
 */
#ifndef VLFRONT_H_
#define VLFRONT_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define VLF_API __declspec(dllexport)
#else
#define VLF_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define VLF_ABI_VERSION 1

/* What went wrong; mirrors vlfront.errors in Python. */
typedef enum vlf_status_code {
  VLF_OK = 0,
  VLF_ERR_INVALID_ARGUMENT = 1, /* NULL handle, unknown option, bad enum value */
  VLF_ERR_CONFIG = 2,           /* ConfigError */
  VLF_ERR_TOKENIZER = 3,        /* TokenizerError: asset missing, corrupted, not SPEC's */
  VLF_ERR_BUNDLE = 4,           /* BundleError: missing, tampered, path escape, schema */
  VLF_ERR_REQUEST = 5,          /* RequestError: message names the request index */
  VLF_ERR_IMAGE = 6,            /* ImageError: corrupt, truncated, too large, unsupported */
  VLF_ERR_QUEUE_FULL = 7,       /* QueueFullError: retry later or raise max_queue */
  VLF_ERR_ENGINE = 8,           /* EngineError: TensorRT engine missing or stale */
  VLF_ERR_BACKEND = 9,          /* the inference library failed */
  VLF_ERR_OUT_OF_MEMORY = 10,
  VLF_ERR_INTERNAL = 11         /* a bug: please report it with the message */
} vlf_status_code;

typedef struct vlf_status vlf_status;
typedef struct vlf_tokenizer vlf_tokenizer;
typedef struct vlf_tokens vlf_tokens;
typedef struct vlf_runtime_options vlf_runtime_options;
typedef struct vlf_runtime vlf_runtime;
typedef struct vlf_request vlf_request;
typedef struct vlf_embeddings vlf_embeddings;
typedef struct vlf_batcher vlf_batcher;

/* ---- status --------------------------------------------------------------- */

/* VLF_OK for NULL. */
VLF_API vlf_status_code vlf_status_get_code(const vlf_status* status);
/* Borrowed; valid until the status is destroyed. "" for NULL. */
VLF_API const char* vlf_status_get_message(const vlf_status* status);
VLF_API void vlf_status_destroy(vlf_status* status);
/* Borrowed static string, e.g. "0.1.0". */
VLF_API const char* vlf_version(void);

/* ---- tokenizer (SPEC §1.2) ------------------------------------------------- */

/* path: borrowed; a tokenizer.json (Hugging Face format) or a .tiktoken ranks file.
 * out: owned by the caller (vlf_tokenizer_destroy). */
VLF_API vlf_status* vlf_tokenizer_create(const char* path, vlf_tokenizer** out);
VLF_API void vlf_tokenizer_destroy(vlf_tokenizer* tokenizer);
/* Encodes ordinary text (NFC, no special tokens). text: borrowed, text_len bytes of UTF-8.
 * out: owned (vlf_tokens_destroy). */
VLF_API vlf_status* vlf_tokenizer_encode(const vlf_tokenizer* tokenizer, const char* text, size_t text_len,
                                         vlf_tokens** out);
VLF_API size_t vlf_tokens_count(const vlf_tokens* tokens);
/* Borrowed; lives as long as `tokens`. */
VLF_API const int32_t* vlf_tokens_data(const vlf_tokens* tokens);
VLF_API void vlf_tokens_destroy(vlf_tokens* tokens);

/* ---- image preprocessing (SPEC §1.4) --------------------------------------- */

/* Decodes JPEG or PNG bytes, applies the EXIF orientation, converts to RGB and
 * resizes to size x size with PIL's BICUBIC. data: borrowed. out: caller's
 * buffer of size*size*3 bytes (HWC, RGB). */
VLF_API vlf_status* vlf_image_preprocess(const uint8_t* data, size_t len, int64_t size, uint8_t* out);

/* ---- runtime options ------------------------------------------------------- */

/* out: owned (vlf_runtime_options_destroy). */
VLF_API vlf_status* vlf_runtime_options_create(vlf_runtime_options** out);
VLF_API void vlf_runtime_options_destroy(vlf_runtime_options* options);
/* key, value: borrowed. Keys (defaults as in Python's Runtime.load):
 *   backend        "auto" | "onnxruntime" | "tensorrt"       (auto)
 *   precision      "fp32" | "fp16" | "int8"                  (fp32)
 *   threads        ONNX Runtime intra-op threads, 0 = all cores (0)
 *   truncation     "truncate" | "error"                      (truncate)
 *   cache_bytes    visual-token cache bound, 0 disables it   (268435456)
 *   max_image_bytes / max_image_pixels / max_image_side      (64 MiB / 64000000 / 32768)
 *   allow_paths    "1" | "0": image items may name files      (1)
 *   verify         "1" | "0": int8/fp16 run the bundle's acceptance probe at load and
 *                  fail below its gate (VLF_ERR_BUNDLE); "0" skips it, with a warning on stderr (1)
 *   decode         "exact" (SPEC 1.4) | "fast" | "fastest" (DCT-scaled JPEG to >= 2x | >= 1.5x the output
 *                  size; part of the image key) (exact)
 *   device_id      CUDA device for TensorRT                  (0)
 * An unknown key or an invalid value is VLF_ERR_INVALID_ARGUMENT naming both. */
VLF_API vlf_status* vlf_runtime_options_set(vlf_runtime_options* options, const char* key, const char* value);

/* ---- runtime ---------------------------------------------------------------- */

/* Validates the bundle (docs/bundle.md) and starts a backend on it.
 * bundle_dir: borrowed. options: borrowed, may be NULL (defaults).
 * out: owned (vlf_runtime_destroy). */
VLF_API vlf_status* vlf_runtime_create(const char* bundle_dir, const vlf_runtime_options* options,
                                       vlf_runtime** out);
VLF_API void vlf_runtime_destroy(vlf_runtime* runtime);
/* Integer facts: "hidden_size", "max_seq_len", "max_text_tokens", "image_size",
 * "tokens_per_image", "vocab_rows", "cache_entries", "cache_bytes", "cache_hits",
 * "cache_misses", "cache_evictions". key: borrowed. */
VLF_API vlf_status* vlf_runtime_get_int(const vlf_runtime* runtime, const char* key, int64_t* out);
/* Borrowed; lives as long as `runtime`. The backend name ("onnxruntime", "tensorrt"). */
VLF_API const char* vlf_runtime_backend(const vlf_runtime* runtime);
/* Borrowed; lives as long as `runtime`. */
VLF_API const vlf_tokenizer* vlf_runtime_tokenizer(const vlf_runtime* runtime);

/* ---- requests (SPEC §1: a chat) -------------------------------------------- */

/* out: owned (vlf_request_destroy). Starts with no messages, add_generation_prompt on. */
VLF_API vlf_status* vlf_request_create(vlf_request** out);
/* Parses a request from JSON: a list of messages, or {"messages": [...],
 * "add_generation_prompt": bool}; an image item's "image" is a file path, or
 * {"base64": "..."} for encoded bytes; OpenAI's {"type": "image_url", "image_url":
 * {"url": "data:image/...;base64,..."}} and chat-completions fields as docs/openai.md
 * says. json: borrowed. out: owned. */
VLF_API vlf_status* vlf_request_create_from_json(const char* json, size_t len, vlf_request** out);
VLF_API void vlf_request_destroy(vlf_request* request);
/* Starts a new message. role: borrowed; "system", "user" or "assistant". */
VLF_API vlf_status* vlf_request_add_message(vlf_request* request, const char* role);
/* Appends a text item to the last message. text: borrowed (copied). */
VLF_API vlf_status* vlf_request_add_text(vlf_request* request, const char* text, size_t len);
/* Appends an image item given as encoded JPEG/PNG bytes. data: borrowed (copied). */
VLF_API vlf_status* vlf_request_add_image_encoded(vlf_request* request, const uint8_t* data, size_t len);
/* Appends an image item read from a file when the request is embedded. path: borrowed (copied). */
VLF_API vlf_status* vlf_request_add_image_file(vlf_request* request, const char* path);
/* Appends an image item given as RGB pixels, row_stride bytes apart (>= 3*width).
 * pixels: borrowed (copied). */
VLF_API vlf_status* vlf_request_add_image_rgb(vlf_request* request, const uint8_t* pixels, int64_t height,
                                              int64_t width, int64_t row_stride);
VLF_API vlf_status* vlf_request_set_add_generation_prompt(vlf_request* request, int enabled);

/* ---- embedding ------------------------------------------------------------- */

typedef enum vlf_output {
  VLF_OUTPUT_INPUTS_EMBEDS = 0,        /* float32 [B, max_seq_len, D] */
  VLF_OUTPUT_INPUT_IDS = 1,            /* int64 [B, max_seq_len] */
  VLF_OUTPUT_ATTENTION_MASK = 2,       /* int64 [B, max_seq_len] */
  VLF_OUTPUT_IMAGE_ATTENTION_MASK = 3, /* int64 [B, max_seq_len] */
  VLF_OUTPUT_PIXEL_VALUES = 4,         /* uint8 [n_images, S, S, 3], request then appearance order */
  VLF_OUTPUT_IMAGES_PER_REQUEST = 5,   /* int64 [B] */
  VLF_OUTPUT_DROPPED_TOKENS = 6        /* int64 [B]: text tokens truncated per request */
} vlf_output;

typedef enum vlf_dtype { VLF_DTYPE_FLOAT32 = 1, VLF_DTYPE_UINT8 = 2, VLF_DTYPE_INT64 = 7 } vlf_dtype;

/* A borrowed view of one output tensor (row-major, contiguous). */
typedef struct vlf_tensor {
  const void* data; /* borrowed; lives as long as the vlf_embeddings */
  vlf_dtype dtype;
  size_t rank;
  int64_t shape[4];
} vlf_tensor;

/* Embeds a batch. requests: borrowed array of `count` borrowed requests.
 * The first bad request fails the call (its index in the message); no graph runs.
 * out: owned (vlf_embeddings_destroy). */
VLF_API vlf_status* vlf_runtime_embed(vlf_runtime* runtime, const vlf_request* const* requests, size_t count,
                                      vlf_embeddings** out);
/* The processor alone (SPEC §1.3-1.4): every output but inputs_embeds, which is empty. */
VLF_API vlf_status* vlf_runtime_process(vlf_runtime* runtime, const vlf_request* const* requests, size_t count,
                                        vlf_embeddings** out);
/* Fills `out` (caller's struct) with a view of one output. */
VLF_API vlf_status* vlf_embeddings_get(const vlf_embeddings* embeddings, vlf_output which, vlf_tensor* out);
/* Seconds spent per stage: "layout", "decode", "patch_embed", "fusion", "total". */
VLF_API vlf_status* vlf_embeddings_get_timing(const vlf_embeddings* embeddings, const char* stage, double* out);
VLF_API void vlf_embeddings_destroy(vlf_embeddings* embeddings);

/* ---- dynamic batcher (servers) ------------------------------------------- */

/* Groups concurrent single requests into batches of at most max_batch, waiting
 * at most max_wait_us for a batch to fill; at most max_queue wait.
 * runtime: borrowed; must outlive the batcher. out: owned (vlf_batcher_destroy,
 * which finishes the queued requests first). */
VLF_API vlf_status* vlf_batcher_create(vlf_runtime* runtime, size_t max_batch, int64_t max_wait_us,
                                       size_t max_queue, vlf_batcher** out);
/* Embeds one request through the batcher; blocks until its batch ran. One bad
 * request fails alone. request: borrowed. out: owned, B = 1.
 * VLF_ERR_QUEUE_FULL when max_queue requests are already waiting. */
VLF_API vlf_status* vlf_batcher_embed(vlf_batcher* batcher, const vlf_request* request, vlf_embeddings** out);
/* Counters: "requests", "batches" (served so far). key: borrowed. */
VLF_API vlf_status* vlf_batcher_get_int(const vlf_batcher* batcher, const char* key, int64_t* out);
VLF_API void vlf_batcher_destroy(vlf_batcher* batcher);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* VLFRONT_H_ */
