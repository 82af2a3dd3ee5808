// MIME types of static files (pure). A compact table of what a web app and
// netwine's own pages ship; anything else is application/octet-stream, which with
// X-Content-Type-Options: nosniff the browser downloads rather than renders.
#pragma once

#include <string_view>

namespace netwine::http {

// The Content-Type for a file name or path, chosen by its extension (compared
// case-insensitively; only the last path segment counts). text/* types carry
// "; charset=utf-8"; types whose format declares its own encoding (JSON, XML, SVG)
// do not. ".d.ts" (TypeScript declarations, shipped next to js-client) is plain
// text; a bare ".ts" is not in the table, being MPEG transport stream as often as
// TypeScript. Names with no extension, or only a leading dot (".htaccess"), get
// the default.
std::string_view mime_type_for(std::string_view path);

inline constexpr std::string_view kDefaultMimeType = "application/octet-stream";

}  // namespace netwine::http
