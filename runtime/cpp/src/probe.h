// The load-time acceptance probe (Python: vlfront.runtime.probe, docs/bundle.md).
//
// A calibrated bundle carries probe.safetensors: a few held-out images' pixels
// with their fp32 visual tokens, and one request's input_ids with its fp32
// inputs_embeds on the attended tokens. Before an int8 or fp16 variant serves,
// both graphs run the probe on the runner that will serve, and each output must
// pass the bundle's gate (calibration.thresholds: per-token cosine mean and
// min, finite). Below it, load fails with Error(VLF_ERR_BUNDLE) naming the
// figure, the gate, this machine and the remedy, in the same words as Python.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backend.h"
#include "bundle.h"

namespace vlfront::impl {

struct ProbeFigures {
  double cosine_min = 1.0, cosine_mean = 1.0, rel_l2 = 0.0, max_abs = 0.0;
  bool finite = true;
  int64_t tokens = 0;
};

// The gate's figures of `actual` against `expected`, both [rows, dim] float32, in double.
ProbeFigures probe_figures(const float* actual, const float* expected, int64_t rows, int64_t dim);

// One tensor of a safetensors file: dtype ("U8", "I64", "F32", ...), shape, raw little-endian bytes.
struct SafeTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string data;
};
// Parses a whole safetensors file held in memory: header size capped, offsets checked against the
// dtype and shape, tensors back to back covering the data exactly. Raises Error(VLF_ERR_BUNDLE) naming `where`.
std::map<std::string, SafeTensor> parse_safetensors(const std::string& bytes, const std::string& where);

// "CPU 'model' (arch: feature feature ...)": the CPU this process runs on (/proc/cpuinfo).
std::string describe_this_cpu();

// Runs the probe on a loaded runner serving `precision`; throws Error(VLF_ERR_BUNDLE) below the gate.
void verify_probe(Bundle& bundle, Runner& runner, const std::string& precision);

// The opt-out's warning (on stderr), the text of Python's log record.
void warn_probe_skipped(const Bundle& bundle, const std::string& precision);

}  // namespace vlfront::impl
