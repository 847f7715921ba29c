#include "openai_compat.h"

#include <algorithm>
#include <cctype>

#include "base64.h"
#include "error.h"
#include "openai_fields.h"
#include "py_show.h"

namespace vlfront::impl::openai {

namespace {

using nlohmann::json;

constexpr char kDataUrlHint[] = "data:image/png;base64,...";

const json& table() {
  static const json t = json::parse(kOpenAiFieldsJson);
  return t;
}

std::vector<std::string> sorted_keys(const json& obj) {
  std::vector<std::string> keys;
  for (const auto& [k, _] : obj.items()) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  return keys;
}

std::string py_list(const std::vector<std::string>& keys) {
  std::string out = "[";
  for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", '" : "'") + keys[i] + "'";
  return out + "]";
}

// The first key of `obj` (sorted) that `refused` lists: throws "<where>'key' is refused: <reason>".
void refuse_listed(const json& obj, const json& refused, const std::string& prefix, long index,
                   const std::string& suffix = "") {
  for (const auto& key : sorted_keys(obj)) {
    const auto it = refused.find(key);
    if (it != refused.end())
      throw request_error(VLF_ERR_REQUEST, index, prefix + "'" + key + "' is refused: " + it->get<std::string>() + suffix);
  }
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"; "" when none.
std::string url_scheme(const std::string& url) {
  if (url.empty() || !std::isalpha(static_cast<unsigned char>(url[0]))) return "";
  for (size_t i = 1; i < url.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(url[i]);
    if (c == ':') return lower(url.substr(0, i));
    if (!std::isalnum(c) && c != '+' && c != '-' && c != '.') return "";
  }
  return "";
}

}  // namespace

void check_request_fields(const json& request, const std::vector<std::string>& own, long index) {
  const json& t = table()["request"];
  refuse_listed(request, t["refused"], "", index, " (docs/openai.md)");
  std::vector<std::string> extra;
  for (const auto& key : sorted_keys(request))
    if (std::find(own.begin(), own.end(), key) == own.end() && !t["ignored"].contains(key)) extra.push_back(key);
  if (!extra.empty()) {
    std::vector<std::string> allowed = own;
    std::sort(allowed.begin(), allowed.end());
    throw request_error(VLF_ERR_REQUEST, index,
                        "unknown request keys " + py_keys(extra) + "; allowed: " + py_list(allowed) +
                            " and the OpenAI fields that cannot change the output (docs/openai.md)");
  }
}

void check_message_keys(const json& message, const std::string& where, long index) {
  refuse_listed(message, table()["message"]["refused"], where + ": ", index);
}

void check_item_type(const std::string& kind, const std::string& where, long index) {
  const json& refused = table()["item_types"]["refused"];
  const auto it = refused.find(kind);
  if (it != refused.end())
    throw request_error(VLF_ERR_REQUEST, index,
                        where + ": type '" + kind + "' is refused: " + it->get<std::string>());
}

std::vector<uint8_t> image_url_bytes(const json& value, const std::string& where, long index) {
  auto fail = [&](const std::string& m) { return request_error(VLF_ERR_REQUEST, index, where + ": " + m); };
  std::string url;
  if (value.is_object()) {
    refuse_listed(value, table()["image_url"]["refused"], where + ": ", index);
    if (value.size() != 1 || !value.contains("url"))
      throw fail("image_url needs exactly the key ['url'], got " + py_keys(sorted_keys(value)));
    if (!value["url"].is_string()) throw fail("the image_url's url must be a str, got " + py_type(value["url"]));
    url = value["url"].get<std::string>();
  } else if (value.is_string()) {
    url = value.get<std::string>();
  } else {
    throw fail("image_url must be a dict {'url': ...} or a str, got " + py_type(value));
  }
  const std::string scheme = url_scheme(url);
  const std::string hint = std::string(" (") + kDataUrlHint + ")";
  if (scheme == "http" || scheme == "https")
    throw fail("remote " + scheme + ": URLs are not fetched here; send the image as a data: URL" + hint +
               ", or let a server with a fetcher download it (docs/openai.md)");
  if (scheme == "file") throw fail("file: URLs are never opened; send the image as a data: URL" + hint);
  if (scheme != "data")
    throw fail(std::string("image_url takes a data: URL") + hint + ", got " +
               (scheme.empty() ? "a value that is not a URL" : "a URL of another scheme"));
  const size_t comma = url.find(',');
  if (comma == std::string::npos) throw fail("the data URL has no ',' before its data" + hint);
  const std::string header = url.substr(5, comma - 5);
  const size_t first_semi = header.find(';');
  const std::string media = lower(header.substr(0, first_semi));
  if (media.rfind("image/", 0) != 0) throw fail("the data URL's media type is not image/*" + hint);
  const size_t last_semi = header.rfind(';');
  if (first_semi == std::string::npos || lower(header.substr(last_semi + 1)) != "base64")
    throw fail("the data URL is not base64" + hint + "; percent-encoded data is not accepted");
  std::vector<uint8_t> out;
  if (!base64_decode(std::string_view(url).substr(comma + 1), out))
    throw request_error(VLF_ERR_IMAGE, index, where + ": the data URL's data is not valid base64");
  return out;
}

}  // namespace vlfront::impl::openai
