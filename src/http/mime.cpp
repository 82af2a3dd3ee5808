#include "http/mime.hpp"

#include "ascii.hpp"

#include <array>

namespace netwine::http {

namespace {

struct MimeEntry {
  std::string_view extension;  // lowercase, without the dot
  std::string_view type;
};

// JavaScript is text/javascript (RFC 9239); wasm must be application/wasm for
// WebAssembly.instantiateStreaming; ico uses image/x-icon, which every browser knows.
constexpr std::array kTable{
    MimeEntry{"html", "text/html; charset=utf-8"},
    MimeEntry{"htm", "text/html; charset=utf-8"},
    MimeEntry{"css", "text/css; charset=utf-8"},
    MimeEntry{"js", "text/javascript; charset=utf-8"},
    MimeEntry{"mjs", "text/javascript; charset=utf-8"},
    MimeEntry{"json", "application/json"},
    MimeEntry{"map", "application/json"},
    MimeEntry{"txt", "text/plain; charset=utf-8"},
    MimeEntry{"svg", "image/svg+xml"},
    MimeEntry{"png", "image/png"},
    MimeEntry{"jpg", "image/jpeg"},
    MimeEntry{"jpeg", "image/jpeg"},
    MimeEntry{"gif", "image/gif"},
    MimeEntry{"webp", "image/webp"},
    MimeEntry{"ico", "image/x-icon"},
    MimeEntry{"wasm", "application/wasm"},
    MimeEntry{"woff", "font/woff"},
    MimeEntry{"woff2", "font/woff2"},
    MimeEntry{"ttf", "font/ttf"},
    MimeEntry{"otf", "font/otf"},
    MimeEntry{"pdf", "application/pdf"},
    MimeEntry{"xml", "application/xml"},
    MimeEntry{"mp4", "video/mp4"},
    MimeEntry{"webm", "video/webm"},
    MimeEntry{"ogg", "audio/ogg"},
    MimeEntry{"mp3", "audio/mpeg"},
    MimeEntry{"wav", "audio/wav"},
};

constexpr std::string_view kTypeScriptDeclarations = "text/plain; charset=utf-8";

bool iends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

}  // namespace

std::string_view mime_type_for(std::string_view path) {
  const size_t slash = path.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  const size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return kDefaultMimeType;
  // "x.d.ts" but not ".d.ts" alone (a dotfile named "d.ts").
  if (name.size() > 5 && iends_with(name, ".d.ts")) return kTypeScriptDeclarations;
  const std::string_view ext = name.substr(dot + 1);
  for (const auto& entry : kTable) {
    if (iequals(ext, entry.extension)) return entry.type;
  }
  return kDefaultMimeType;
}

}  // namespace netwine::http
