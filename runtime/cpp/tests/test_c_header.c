/* Compiled as C11: vlfront.h is a pure C header, and the C ABI works without C++. */
#include <stdio.h>
#include <string.h>

#include "vlfront/vlfront.h"

static int fails = 0;
#define CHECK(cond)                                          \
  do {                                                       \
    if (!(cond)) {                                           \
      fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++fails;                                               \
    }                                                        \
  } while (0)

int main(int argc, char** argv) {
  vlf_runtime* rt = NULL;
  vlf_status* s = vlf_runtime_create("/nonexistent/bundle", NULL, &rt);
  CHECK(s != NULL && vlf_status_get_code(s) == VLF_ERR_BUNDLE);
  CHECK(strstr(vlf_status_get_message(s), "no manifest.json") != NULL);
  vlf_status_destroy(s);
  CHECK(rt == NULL);

  vlf_request* req = NULL;
  CHECK(vlf_request_create(&req) == NULL);
  CHECK(vlf_request_add_message(req, "user") == NULL);
  CHECK(vlf_request_add_text(req, "Hello world", 11) == NULL);
  if (argc > 1) { /* a bundle directory: embed the request */
    CHECK(vlf_runtime_create(argv[1], NULL, &rt) == NULL);
    vlf_embeddings* out = NULL;
    const vlf_request* batch[1] = {req};
    CHECK(vlf_runtime_embed(rt, batch, 1, &out) == NULL);
    vlf_tensor t;
    CHECK(vlf_embeddings_get(out, VLF_OUTPUT_INPUT_IDS, &t) == NULL);
    CHECK(t.dtype == VLF_DTYPE_INT64 && t.rank == 2 && t.shape[1] == 1024);
    CHECK(((const int64_t*)t.data)[0] == 151644); /* <|im_start|> */
    vlf_embeddings_destroy(out);
    vlf_runtime_destroy(rt);
  }
  vlf_request_destroy(req);
  printf("%s (%s)\n", fails ? "FAILED" : "ok", vlf_version());
  return fails ? 1 : 0;
}
