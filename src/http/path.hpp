// Request-path decoding and normalising (pure: no I/O).
//
// A request path goes through three steps before it may touch the file system
// (SPEC section 4): percent-decoding, normalising, then mapping under the root
// (static_files.hpp). This file owns the first two. Its promise: a path it returns
// is absolute, contains no "." or ".." segment, no empty segment, no NUL, no
// backslash and no control character, and is valid UTF-8, so appending it to a
// root directory names something inside that root (symlinks aside: the mapping
// step checks those with realpath()).
#pragma once

#include <string>
#include <string_view>
#include <variant>

namespace netwine::http {

// Why a request path was refused. Each value maps to one HTTP status
// (status_for below).
enum class PathError {
  BadEncoding,   // '%' not followed by two hex digits, or a control character
                 // (0x01-0x1F, 0x7F) raw or decoded: no web asset is named so, and
                 // refusing them keeps CR/LF out of logs and Location headers. 400.
  NulByte,       // a NUL byte, raw or as %00: it would cut the C string the file
                 // system sees. 400.
  EncodedSlash,  // %2F or %5C: decoding would add a segment separator the URL did
                 // not have ("..%2f" must not become "../"). 400.
  EscapesRoot,   // a ".." that climbs above "/", a segment of three or more dots
                 // (some systems read "..." as ".."), or a raw backslash (a separator
                 // on other systems; never a legitimate part of our URLs). 403.
  NotAbsolute,   // does not start with '/' (e.g. "*" or an empty path). 400.
  BadUtf8,       // the decoded bytes are not well-formed UTF-8: overlong forms such
                 // as %C0%AE (an old way to smuggle '.'), surrogates, > U+10FFFF. 400.
};

// A short name for logs, e.g. "encoded slash".
const char* to_string(PathError e);

// The HTTP status a refused path is answered with: 403 for EscapesRoot (the client
// asked for something outside the site; we refuse rather than pretend it is
// missing), 400 for everything else (the request itself is malformed).
int status_for(PathError e);

// Decodes and normalises the path part of a request URI (no query, no fragment:
// the caller strips them). On success returns an absolute path such as "/a/b.html":
//  - percent-escapes are decoded, so "%2e%2e" is "..", exactly as RFC 3986 says;
//    the checks of PathError run on the decoded bytes;
//  - empty segments ("//") and "." segments are dropped; ".." removes the segment
//    before it, and one at the top is EscapesRoot (never silently clamped to "/",
//    which would hide an attack in the logs);
//  - a trailing slash is kept, and a path ending in "/." or "/.." gets one (as in
//    RFC 3986 remove_dot_segments), so the caller knows a directory was asked for;
//  - trailing dots and spaces inside a segment ("index.html.", "a ") are kept as
//    they are: on POSIX file systems they are part of the name, so "index.html."
//    names a different (usually missing, so 404) file. We never strip them: that
//    stripping is what let "x.php." reveal source code on Windows servers.
std::variant<std::string, PathError> normalise_request_path(std::string_view raw_path);

// Percent-encodes a normalised path for use in a URI (e.g. a Location header):
// unreserved characters, sub-delims, ':', '@' and '/' stay, every other byte
// becomes %XX (uppercase).
std::string percent_encode_path(std::string_view path);

}  // namespace netwine::http
