// Static files (SPEC section 4): the decision logic, pure and unit-tested, and
// StaticSite, the thin evhttp adapter that feeds it.
//
// A request goes: method check -> normalise_request_path (path.hpp) -> aliases or
// map_to_file (realpath containment under the root) -> open + fstat -> decide()
// -> one response through http_util's send_reply (so it is access-logged).
//
// Decisions, in one place:
//  - ETags are strong, "size-mtime-inode" in hex, quoted (like nginx, plus the inode
//    so a deploy by rename changes it). Known limit: a rewrite in place within the
//    same second that keeps the size keeps the ETag.
//  - If-None-Match (a list, "*", weak comparison) takes precedence over
//    If-Modified-Since, as RFC 9110 13.2.2 orders them; both give 304.
//  - One range only: "bytes=a-b", "bytes=a-", "bytes=-n". Several ranges, another
//    unit, or a malformed header are ignored (200 with the whole file), as RFC 9110
//    14.2 allows; a well-formed but unsatisfiable range is 416 with
//    "Content-Range: bytes */size". If-Range (an ETag, compared strongly, or a date
//    equal to Last-Modified) is honoured. Range applies to GET only (RFC 9110 14.2),
//    so HEAD always describes the 200 response.
//  - Cache-Control: "no-cache" for HTML and for aliases (/netwine.js must match the
//    running server, and HTML is how a new version of an app is found); every other
//    file "public, max-age=3600": an hour of staleness for sub-resources, bounded,
//    and revalidation is cheap (304) after that.
//  - Path errors: 400, except a climb above the root: 403 (status_for in path.hpp).
//    Symlinks leading out of the root: 403. Missing: 404. A directory without a
//    trailing slash: 301 to "path/" (query kept); with one: its index.html, or 404
//    (no listings).
//  - HEAD: libevent 2.1.12 sends whatever body is given even for HEAD and adds no
//    Content-Length for it (checked), so HEAD responses carry an explicit
//    Content-Length and no body.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "http/path.hpp"

struct evhttp_request;

namespace netwine::http {

// What fstat() said about a file, the inputs of the validators.
struct FileMeta {
  uint64_t size = 0;
  int64_t mtime_sec = 0;
  uint64_t inode = 0;
};

// A strong ETag, quoted: "\"<size>-<mtime>-<inode>\"" in lowercase hex.
std::string make_etag(const FileMeta& meta);

// IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT". Times outside years
// 1970..9999 are clamped to that range (the format has four year digits).
std::string http_date(int64_t unix_seconds);

// Parses the three HTTP-date forms of RFC 9110 5.6.7: IMF-fixdate, RFC 850
// ("Sunday, 06-Nov-94 08:49:37 GMT"; two-digit years 70-99 are 19xx, 00-69 20xx)
// and asctime ("Sun Nov  6 08:49:37 1994"). Case-sensitive as the RFC says; the
// day name must be a real one but is not checked against the date. nullopt for
// anything else, including impossible dates (Feb 30).
std::optional<int64_t> parse_http_date(std::string_view text);

// An inclusive byte range inside a file: bytes first..last.
struct ByteRange {
  uint64_t first = 0;
  uint64_t last = 0;
  uint64_t length() const { return last - first + 1; }
};

enum class RangeResult {
  None,           // no Range header (an empty value counts as none): 200
  Satisfiable,    // one range that overlaps the file; `range` is clamped to it: 206
  Unsatisfiable,  // one well-formed range entirely past the end (or "-0"): 416
  Ignore,         // malformed, another unit, or several ranges: serve 200 whole
};

struct RangeParse {
  RangeResult result = RangeResult::None;
  ByteRange range{};  // meaningful when result == Satisfiable
};

// Parses a Range header value against a file of `size` bytes. Numbers too large
// for 64 bits saturate (so they are simply past the end). A suffix range on an
// empty file is Ignore: the "whole representation" it asks for is empty, which
// Content-Range cannot express; "bytes=0-" on an empty file is Unsatisfiable.
RangeParse parse_range(std::string_view header, uint64_t size);

// If-None-Match evaluation: true when `header` is "*" or lists an entity-tag that
// matches `etag` under weak comparison (a W/ prefix on either side is ignored).
// A malformed list matches nothing from the first bad element on.
bool if_none_match_matches(std::string_view header, std::string_view etag);

// If-Range evaluation: true when the Range may be honoured, i.e. the value is a
// strong ETag equal to `etag`, or an HTTP-date equal to the file's mtime.
bool if_range_matches(std::string_view header, std::string_view etag, int64_t mtime_sec);

// Where a request path led on disk (filled in by map_to_file and the adapter).
enum class FileLookup {
  Found,        // a regular file; StaticRequest::meta describes it
  NotFound,     // missing, or a directory without index.html: 404
  Forbidden,    // outside the root (symlink), unreadable, not a regular file: 403
  IsDirectory,  // a directory asked for without a trailing slash: 301 to path + "/"
  Failed,       // an I/O error that says nothing about the path (EMFILE, EIO): 500
};

// Everything decide() needs, gathered by the adapter (or a test).
struct StaticRequest {
  enum class Method { Get, Head, Other };
  Method method = Method::Get;
  std::variant<std::string, PathError> path = std::string("/");  // normalised
  std::string query;  // raw query string, without '?'; kept on a 301
  FileLookup lookup = FileLookup::NotFound;
  FileMeta meta{};  // meaningful when lookup == Found
  // An alias such as /netwine.js: always revalidated, whatever its type.
  bool is_alias = false;
  std::optional<std::string> if_none_match;
  std::optional<std::string> if_modified_since;
  std::optional<std::string> range;
  std::optional<std::string> if_range;
};

struct Header {
  std::string name;
  std::string value;
};

// The whole response, decided without touching a socket.
struct StaticDecision {
  int status = 500;
  std::vector<Header> headers;  // to add in order; evhttp adds Date
  std::string body;             // a short text body ("404 not found\n"); empty for HEAD
  bool send_file = false;       // send bytes `range` of the opened file after `body`
  ByteRange range{};            // meaningful when send_file (never empty)
};

// Maps a request to its response: 405, the path error's status, 301/403/404/500
// from the lookup, then for a file 304, 416, 206 or 200, with headers and range.
StaticDecision decide(const StaticRequest& req);

// Maps a normalised path (from normalise_request_path) to a file under
// `root_realpath` (absolute and symlink-free, i.e. from realpath()). Resolves it
// with realpath() and refuses (Forbidden) any result outside the root, so
// symlinks may point anywhere inside the root but never out of it. A directory
// with a trailing slash maps to its index.html (checked the same way); without
// one it is IsDirectory. Returns the real path of a regular file, or why there
// is none (never FileLookup::Found).
// Touches the file system (realpath, stat) but nothing else.
// Known limit: between this check and open() a writer inside the root could swap
// a directory for a symlink; the root is trusted to be written only by its owner.
std::variant<std::string, FileLookup> map_to_file(std::string_view root_realpath,
                                                  std::string_view normalised_path);

// The evhttp adapter: serves the files under `www_root` plus `aliases`, a map from
// a normalised URL path ("/netwine.js") to an absolute file path (trusted
// configuration, not subject to the root containment check).
class StaticSite {
 public:
  StaticSite(std::string www_root, std::map<std::string, std::string> aliases);

  // Answers `req` (any method, any path) with exactly one response through
  // send_reply. Returns false only if it did not answer (a null request).
  // The root is resolved with realpath() per request, so swapping a "www"
  // symlink to deploy a new version takes effect at once.
  // Read-only: every event loop may call it.
  bool handle(evhttp_request* req) const;

 private:
  std::string www_root_;
  std::map<std::string, std::string> aliases_;
};

}  // namespace netwine::http
