// A minimal reader of the protobuf wire format, enough to list where an ONNX
// model keeps external tensor data (docs/bundle.md rule 5) without linking
// protobuf. Field numbers are those of onnx/onnx.proto3.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bundle.h"
#include "error.h"

namespace vlfront::impl {

namespace {

constexpr int kMaxDepth = 64;

struct Reader {
  std::string_view buf;
  size_t pos = 0;
  bool done() const { return pos >= buf.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= buf.size()) throw Error(VLF_ERR_BUNDLE, "truncated varint");
      const uint8_t b = static_cast<uint8_t>(buf[pos++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    throw Error(VLF_ERR_BUNDLE, "varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > buf.size() - pos) throw Error(VLF_ERR_BUNDLE, "length-delimited field runs past the end");
    std::string_view out = buf.substr(pos, n);
    pos += n;
    return out;
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: advance(8); break;
      case 2: bytes(); break;
      case 5: advance(4); break;
      default: throw Error(VLF_ERR_BUNDLE, "unsupported wire type " + std::to_string(wire));
    }
  }
  void advance(size_t n) {
    if (n > buf.size() - pos) throw Error(VLF_ERR_BUNDLE, "fixed-size field runs past the end");
    pos += n;
  }
};

// Calls fn(field, wire, reader) for each field of a message.
template <typename F>
void fields(std::string_view msg, F&& fn) {
  Reader r{msg};
  while (!r.done()) {
    const uint64_t key = r.varint();
    const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    fn(field, wire, r);
  }
}

void scan_graph(std::string_view g, int depth, std::vector<ExternalRef>& out);
void scan_node(std::string_view n, int depth, std::vector<ExternalRef>& out);

void scan_tensor(std::string_view t, std::vector<ExternalRef>& out) {
  ExternalRef ref;
  bool external = false, has_location = false;
  fields(t, [&](int f, int w, Reader& r) {
    if (f == 8 && w == 2) {  // name
      ref.tensor = std::string(r.bytes());
    } else if (f == 13 && w == 2) {  // external_data: StringStringEntryProto
      std::string key, value;
      fields(r.bytes(), [&](int ef, int ew, Reader& er) {
        if (ef == 1 && ew == 2) key = std::string(er.bytes());
        else if (ef == 2 && ew == 2) value = std::string(er.bytes());
        else er.skip(ew);
      });
      if (key == "location") ref.location = value, has_location = true;
      else if (key == "offset") ref.offset = std::strtoll(value.c_str(), nullptr, 10);
      else if (key == "length") ref.length = std::strtoll(value.c_str(), nullptr, 10);
    } else if (f == 14 && w == 0) {  // data_location
      external = r.varint() == 1;
    } else {
      r.skip(w);
    }
  });
  if (external || has_location) {
    if (!has_location) throw Error(VLF_ERR_BUNDLE, "tensor " + ref.tensor + " is external but names no location");
    out.push_back(std::move(ref));
  }
}

void scan_sparse(std::string_view s, std::vector<ExternalRef>& out) {
  fields(s, [&](int f, int w, Reader& r) {
    if ((f == 1 || f == 2) && w == 2) scan_tensor(r.bytes(), out);  // values, indices
    else r.skip(w);
  });
}

void scan_attribute(std::string_view a, int depth, std::vector<ExternalRef>& out) {
  fields(a, [&](int f, int w, Reader& r) {
    if (w != 2) return r.skip(w);
    if (f == 5 || f == 10) scan_tensor(r.bytes(), out);          // t, tensors
    else if (f == 6 || f == 11) scan_graph(r.bytes(), depth + 1, out);  // g, graphs
    else if (f == 22 || f == 23) scan_sparse(r.bytes(), out);    // sparse_tensor(s)
    else r.skip(w);
  });
}

void scan_node(std::string_view n, int depth, std::vector<ExternalRef>& out) {
  fields(n, [&](int f, int w, Reader& r) {
    if (f == 5 && w == 2) scan_attribute(r.bytes(), depth, out);
    else r.skip(w);
  });
}

void scan_graph(std::string_view g, int depth, std::vector<ExternalRef>& out) {
  if (depth > kMaxDepth) throw Error(VLF_ERR_BUNDLE, "subgraphs nested deeper than " + std::to_string(kMaxDepth));
  fields(g, [&](int f, int w, Reader& r) {
    if (w != 2) return r.skip(w);
    if (f == 1) scan_node(r.bytes(), depth, out);          // node
    else if (f == 5) scan_tensor(r.bytes(), out);          // initializer
    else if (f == 15) scan_sparse(r.bytes(), out);         // sparse_initializer
    else r.skip(w);
  });
}

}  // namespace

std::vector<ExternalRef> onnx_external_data(const std::string& model) {
  std::vector<ExternalRef> out;
  try {
    fields(model, [&](int f, int w, Reader& r) {
      if (f == 7 && w == 2) {
        scan_graph(r.bytes(), 0, out);  // graph
      } else if (f == 25 && w == 2) {   // functions: FunctionProto.node = 7
        fields(r.bytes(), [&](int ff, int fw, Reader& fr) {
          if (ff == 7 && fw == 2) scan_node(fr.bytes(), 1, out);
          else fr.skip(fw);
        });
      } else {
        r.skip(w);
      }
    });
  } catch (const Error& e) {
    throw Error(VLF_ERR_BUNDLE, std::string("not a readable ONNX model: ") + e.what());
  }
  return out;
}

}  // namespace vlfront::impl
