#include "http/static_files.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>

#include "event_handles.hpp"
#include "ascii.hpp"
#include "http/http_util.hpp"
#include "http/mime.hpp"

namespace netwine::http {

namespace {

constexpr std::string_view kTextType = "text/plain; charset=utf-8";
constexpr std::string_view kNoCache = "no-cache";
constexpr std::string_view kCacheHour = "public, max-age=3600";  // see header comment
// The latest time IMF-fixdate's four year digits can show: 9999-12-31 23:59:59.
constexpr int64_t kMaxHttpDate = 253402300799;

constexpr std::array<std::string_view, 7> kShortDays{"Sun", "Mon", "Tue", "Wed",
                                                     "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 7> kLongDays{
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
constexpr std::array<std::string_view, 12> kMonths{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

std::string_view trim_ows(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}


void append_padded(std::string& out, unsigned value, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%0*u", width, value);
  out += buf;
}

// A cursor over a date string; each step consumes on success.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  bool literal(std::string_view lit) {
    if (!s_.starts_with(lit)) return false;
    s_.remove_prefix(lit.size());
    return true;
  }

  std::optional<unsigned> digits(size_t n) {
    if (s_.size() < n) return std::nullopt;
    unsigned v = 0;
    for (size_t i = 0; i < n; ++i) {
      if (s_[i] < '0' || s_[i] > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(s_[i] - '0');
    }
    s_.remove_prefix(n);
    return v;
  }

  // Index of the name in `names` that the input starts with.
  std::optional<unsigned> one_of(std::span<const std::string_view> names) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (literal(names[i])) return static_cast<unsigned>(i);
    }
    return std::nullopt;
  }

  bool done() const { return s_.empty(); }

 private:
  std::string_view s_;
};

struct DateParts {
  int year = 0;
  unsigned month = 0;  // 1-12
  unsigned day = 0, hour = 0, minute = 0, second = 0;
};

std::optional<int64_t> to_unix(const DateParts& p) {
  using namespace std::chrono;
  const year_month_day ymd{year{p.year}, month{p.month}, day{p.day}};
  if (!ymd.ok() || p.hour > 23 || p.minute > 59 || p.second > 60) return std::nullopt;
  const int64_t days_since_epoch = sys_days{ymd}.time_since_epoch().count();
  return days_since_epoch * 86400 + p.hour * 3600 + p.minute * 60 + p.second;
}

bool scan_time(Scanner& s, DateParts& p) {
  auto h = s.digits(2);
  if (!h || !s.literal(":")) return false;
  auto m = s.digits(2);
  if (!m || !s.literal(":")) return false;
  auto sec = s.digits(2);
  if (!sec) return false;
  p.hour = *h, p.minute = *m, p.second = *sec;
  return true;
}

bool scan_month(Scanner& s, DateParts& p) {
  auto m = s.one_of(kMonths);
  if (!m) return false;
  p.month = *m + 1;
  return true;
}

// "Sun, 06 Nov 1994 08:49:37 GMT"
std::optional<int64_t> parse_imf_fixdate(std::string_view text) {
  Scanner s(text);
  DateParts p;
  if (!s.one_of(kShortDays) || !s.literal(", ")) return std::nullopt;
  auto d = s.digits(2);
  if (!d || !s.literal(" ") || !scan_month(s, p) || !s.literal(" ")) return std::nullopt;
  auto y = s.digits(4);
  if (!y || !s.literal(" ") || !scan_time(s, p) || !s.literal(" GMT") || !s.done()) {
    return std::nullopt;
  }
  p.day = *d, p.year = static_cast<int>(*y);
  return to_unix(p);
}

// "Sunday, 06-Nov-94 08:49:37 GMT"
std::optional<int64_t> parse_rfc850(std::string_view text) {
  Scanner s(text);
  DateParts p;
  if (!s.one_of(kLongDays) || !s.literal(", ")) return std::nullopt;
  auto d = s.digits(2);
  if (!d || !s.literal("-") || !scan_month(s, p) || !s.literal("-")) return std::nullopt;
  auto yy = s.digits(2);
  if (!yy || !s.literal(" ") || !scan_time(s, p) || !s.literal(" GMT") || !s.done()) {
    return std::nullopt;
  }
  // RFC 9110 wants "now" to pick the century; a fixed pivot keeps this pure, and
  // nobody has sent an RFC 850 date from before 1970 or after 2069.
  p.day = *d, p.year = static_cast<int>(*yy < 70 ? 2000 + *yy : 1900 + *yy);
  return to_unix(p);
}

// "Sun Nov  6 08:49:37 1994"
std::optional<int64_t> parse_asctime(std::string_view text) {
  Scanner s(text);
  DateParts p;
  if (!s.one_of(kShortDays) || !s.literal(" ") || !scan_month(s, p) || !s.literal(" ")) {
    return std::nullopt;
  }
  auto d = s.literal(" ") ? s.digits(1) : s.digits(2);
  if (!d || !s.literal(" ") || !scan_time(s, p) || !s.literal(" ")) return std::nullopt;
  auto y = s.digits(4);
  if (!y || !s.done()) return std::nullopt;
  p.day = *d, p.year = static_cast<int>(*y);
  return to_unix(p);
}

// Decimal digits only, at least one; values past 2^64-1 saturate.
std::optional<uint64_t> parse_u64_saturating(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<uint64_t>(c - '0');
    v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
  }
  return v;
}

std::string_view short_text(int status) {
  switch (status) {
    case 301: return "301 moved permanently";
    case 400: return "400 bad request";
    case 403: return "403 forbidden";
    case 404: return "404 not found";
    case 405: return "405 method not allowed";
    case 416: return "416 range not satisfiable";
    default: return "500 internal server error";
  }
}

// A response with a short text body ("404 not found\n", or with a detail
// "400 bad request: NUL byte\n"). HEAD gets the same headers and no body.
StaticDecision text_response(const StaticRequest& req, int status, std::vector<Header> extra,
                             std::string_view detail = {}) {
  std::string text(short_text(status));
  if (!detail.empty()) {
    text += ": ";
    text += detail;
  }
  text += '\n';
  StaticDecision d;
  d.status = status;
  d.headers = std::move(extra);
  d.headers.push_back({"Content-Type", std::string(kTextType)});
  d.headers.push_back({"Content-Length", std::to_string(text.size())});
  d.headers.push_back({"X-Content-Type-Options", "nosniff"});
  if (req.method != StaticRequest::Method::Head) d.body = std::move(text);
  return d;
}

StaticDecision decide_file(const StaticRequest& req, const std::string& path) {
  const FileMeta& meta = req.meta;
  const std::string served = path.ends_with('/') ? path + "index.html" : path;
  const std::string_view type = mime_type_for(served);
  const std::string etag = make_etag(meta);
  const bool revalidate = req.is_alias || type.starts_with("text/html");

  std::vector<Header> validators{
      {"ETag", etag},
      {"Last-Modified", http_date(meta.mtime_sec)},
      {"Cache-Control", std::string(revalidate ? kNoCache : kCacheHour)},
  };

  // RFC 9110 13.2.2: If-None-Match, when present, decides alone.
  bool not_modified = false;
  if (req.if_none_match) {
    not_modified = if_none_match_matches(*req.if_none_match, etag);
  } else if (req.if_modified_since) {
    const auto since = parse_http_date(*req.if_modified_since);
    not_modified = since && meta.mtime_sec <= *since;
  }
  if (not_modified) {
    StaticDecision d;
    d.status = 304;
    d.headers = std::move(validators);
    return d;
  }

  RangeParse range;
  if (req.method == StaticRequest::Method::Get && req.range) {
    range = parse_range(*req.range, meta.size);
    const bool applies =
        range.result == RangeResult::Satisfiable || range.result == RangeResult::Unsatisfiable;
    if (applies && req.if_range && !if_range_matches(*req.if_range, etag, meta.mtime_sec)) {
      range.result = RangeResult::Ignore;  // the client's copy is stale: send it all
    }
  }
  if (range.result == RangeResult::Unsatisfiable) {
    return text_response(req, 416,
                         {{"Content-Range", "bytes */" + std::to_string(meta.size)},
                          {"Accept-Ranges", "bytes"}});
  }

  StaticDecision d;
  const bool partial = range.result == RangeResult::Satisfiable;
  const uint64_t length = partial ? range.range.length() : meta.size;
  d.status = partial ? 206 : 200;
  d.headers.push_back({"Content-Type", std::string(type)});
  d.headers.push_back({"Content-Length", std::to_string(length)});
  for (auto& h : validators) d.headers.push_back(std::move(h));
  d.headers.push_back({"Accept-Ranges", "bytes"});
  d.headers.push_back({"X-Content-Type-Options", "nosniff"});
  if (partial) {
    d.headers.push_back({"Content-Range", "bytes " + std::to_string(range.range.first) + "-" +
                                              std::to_string(range.range.last) + "/" +
                                              std::to_string(meta.size)});
  }
  if (req.method == StaticRequest::Method::Get && length > 0) {
    d.send_file = true;
    d.range = partial ? range.range : ByteRange{0, meta.size - 1};
  }
  return d;
}

FileLookup lookup_for_errno(int e) {
  switch (e) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
      return FileLookup::NotFound;
    case EACCES:
    case EPERM:
    case ELOOP:
      return FileLookup::Forbidden;
    default:
      return FileLookup::Failed;
  }
}

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

std::variant<std::string, FileLookup> real_path(const std::string& path) {
  std::unique_ptr<char, FreeDeleter> resolved(::realpath(path.c_str(), nullptr));
  if (!resolved) return lookup_for_errno(errno);
  return std::string(resolved.get());
}

// `root` has no trailing slash ("" stands for "/").
bool is_inside(std::string_view root, std::string_view real) {
  if (real.size() == root.size()) return real == root;
  return real.size() > root.size() && real.starts_with(root) && real[root.size()] == '/';
}

// A file descriptor with one owner.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Opens a path that map_to_file (or the alias table) resolved. O_NOFOLLOW catches
// a last component swapped for a symlink since; O_NONBLOCK keeps a FIFO swapped in
// from blocking the event loop (fstat then refuses it).
FileLookup open_regular(const std::string& path, UniqueFd& fd, FileMeta& meta) {
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (f.get() < 0) return lookup_for_errno(errno);
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) return FileLookup::Failed;
  if (!S_ISREG(st.st_mode)) return FileLookup::Forbidden;
  meta.size = static_cast<uint64_t>(st.st_size);
  meta.mtime_sec = static_cast<int64_t>(st.st_mtim.tv_sec);
  meta.inode = static_cast<uint64_t>(st.st_ino);
  fd = std::move(f);
  return FileLookup::Found;
}

// True when the response goes straight to a plain socket bufferevent, whose
// output buffer libevent drains with writev/sendfile. TLS and filter bufferevents
// read their output buffer's bytes, which a sendfile segment does not have in memory.
bool drains_to_plain_socket(evhttp_request* req) {
  evhttp_connection* conn = evhttp_request_get_connection(req);
  bufferevent* bev = conn ? evhttp_connection_get_bufferevent(conn) : nullptr;
  return bev && bufferevent_get_underlying(bev) == nullptr &&
         bufferevent_openssl_get_ssl(bev) == nullptr;
}

// Appends bytes `range` of the file to `buf` without reading them: on a plain
// socket the bytes go out with sendfile() (the buffer is marked DRAINS_TO_FD;
// send_reply and evhttp only measure and move it); otherwise libevent mmaps the
// segment. Known limit of the mmap path (TLS): a file truncated in place while it
// is being sent raises SIGBUS; deploy by rename (the open file keeps its inode).
// With sendfile a truncated file just ends the connection early.
bool add_file_range(evhttp_request* req, evbuffer* buf, UniqueFd fd, ByteRange range) {
  if (drains_to_plain_socket(req)) evbuffer_set_flags(buf, EVBUFFER_FLAG_DRAINS_TO_FD);
  const auto offset = static_cast<ev_off_t>(range.first);
  const auto length = static_cast<ev_off_t>(range.length());
  evbuffer_file_segment* seg =
      evbuffer_file_segment_new(fd.get(), offset, length, EVBUF_FS_CLOSE_ON_FREE);
  if (!seg) return false;  // the fd is still ours; UniqueFd closes it
  fd.release();            // the segment closes it when the last reference goes
  const int rc = evbuffer_add_file_segment(buf, seg, 0, length);
  evbuffer_file_segment_free(seg);  // drops our reference; `buf` holds its own
  return rc == 0;
}

void respond(evhttp_request* req, const StaticDecision& d, UniqueFd fd) {
  EvbufferPtr body(evbuffer_new());
  if (!body || (d.send_file && !add_file_range(req, body.get(), std::move(fd), d.range))) {
    send_text(req, 500, "500 internal server error\n");
    return;
  }
  if (!d.body.empty() && evbuffer_add(body.get(), d.body.data(), d.body.size()) != 0) {
    send_text(req, 500, "500 internal server error\n");
    return;
  }
  evkeyvalq* out = evhttp_request_get_output_headers(req);
  for (const auto& h : d.headers) {
    // evhttp refuses values with CR/LF; ours are built from percent-encoded
    // paths and evhttp's own parsed query, so a refusal is a bug: say 500.
    if (evhttp_add_header(out, h.name.c_str(), h.value.c_str()) != 0) {
      evhttp_clear_headers(out);
      send_text(req, 500, "500 internal server error\n");
      return;
    }
  }
  send_reply(req, d.status, reason_phrase(d.status), body.get());
}

std::optional<std::string> header_of(evhttp_request* req, const char* name) {
  const char* v = request_header(req, name);
  if (!v) return std::nullopt;
  return std::string(v);
}

}  // namespace

std::string make_etag(const FileMeta& meta) {
  char buf[80];
  std::snprintf(buf, sizeof buf, "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"", meta.size,
                static_cast<uint64_t>(meta.mtime_sec), meta.inode);
  return buf;
}

std::string http_date(int64_t unix_seconds) {
  using namespace std::chrono;
  const sys_seconds tp{seconds{std::clamp<int64_t>(unix_seconds, 0, kMaxHttpDate)}};
  const sys_days day = floor<days>(tp);
  const year_month_day ymd{day};
  const hh_mm_ss hms{tp - day};
  std::string out;
  out.reserve(29);
  out += kShortDays[weekday{day}.c_encoding()];
  out += ", ";
  append_padded(out, static_cast<unsigned>(ymd.day()), 2);
  out += ' ';
  out += kMonths[static_cast<unsigned>(ymd.month()) - 1];
  out += ' ';
  append_padded(out, static_cast<unsigned>(static_cast<int>(ymd.year())), 4);
  out += ' ';
  append_padded(out, static_cast<unsigned>(hms.hours().count()), 2);
  out += ':';
  append_padded(out, static_cast<unsigned>(hms.minutes().count()), 2);
  out += ':';
  append_padded(out, static_cast<unsigned>(hms.seconds().count()), 2);
  out += " GMT";
  return out;
}

std::optional<int64_t> parse_http_date(std::string_view text) {
  text = trim_ows(text);
  if (auto t = parse_imf_fixdate(text)) return t;
  if (auto t = parse_rfc850(text)) return t;
  return parse_asctime(text);
}

RangeParse parse_range(std::string_view header, uint64_t size) {
  header = trim_ows(header);
  if (header.empty()) return {RangeResult::None, {}};
  const RangeParse ignore{RangeResult::Ignore, {}};
  const RangeParse unsatisfiable{RangeResult::Unsatisfiable, {}};

  const size_t eq = header.find('=');
  if (eq == std::string_view::npos || !iequals(header.substr(0, eq), "bytes")) return ignore;

  // range-set = 1#range-spec: empty list elements are allowed and skipped.
  std::string_view spec;
  int count = 0;
  std::string_view set = header.substr(eq + 1);
  while (true) {
    const size_t comma = set.find(',');
    const std::string_view element = trim_ows(set.substr(0, comma));
    if (!element.empty()) {
      ++count;
      spec = element;
    }
    if (comma == std::string_view::npos) break;
    set.remove_prefix(comma + 1);
  }
  if (count != 1) return ignore;  // none is malformed; several we do not serve

  const size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return ignore;
  const std::string_view first_text = spec.substr(0, dash);
  const std::string_view last_text = spec.substr(dash + 1);

  if (first_text.empty()) {  // suffix range: the last n bytes
    const auto n = parse_u64_saturating(last_text);
    if (!n) return ignore;
    if (*n == 0) return unsatisfiable;  // RFC 9110 14.1.1: needs a non-zero suffix
    if (size == 0) return ignore;
    return {RangeResult::Satisfiable, {*n >= size ? 0 : size - *n, size - 1}};
  }

  const auto first = parse_u64_saturating(first_text);
  if (!first) return ignore;
  uint64_t last = UINT64_MAX;
  if (!last_text.empty()) {
    const auto l = parse_u64_saturating(last_text);
    if (!l || *l < *first) return ignore;  // last < first makes the header invalid
    last = *l;
  }
  if (*first >= size) return unsatisfiable;
  return {RangeResult::Satisfiable, {*first, std::min(last, size - 1)}};
}

bool if_none_match_matches(std::string_view header, std::string_view etag) {
  std::string_view h = trim_ows(header);
  if (h == "*") return true;
  if (etag.starts_with("W/")) etag.remove_prefix(2);
  while (true) {
    const size_t start = h.find_first_not_of(" \t,");
    if (start == std::string_view::npos) return false;
    h.remove_prefix(start);
    if (h.starts_with("W/")) h.remove_prefix(2);
    if (!h.starts_with('"')) return false;
    const size_t close = h.find('"', 1);
    if (close == std::string_view::npos) return false;
    if (h.substr(0, close + 1) == etag) return true;
    h.remove_prefix(close + 1);
  }
}

bool if_range_matches(std::string_view header, std::string_view etag, int64_t mtime_sec) {
  const std::string_view h = trim_ows(header);
  if (h.starts_with('"')) return !etag.starts_with("W/") && h == etag;  // strong comparison
  if (h.starts_with("W/")) return false;  // a weak tag never matches strongly
  const auto date = parse_http_date(h);
  return date && *date == mtime_sec;
}

StaticDecision decide(const StaticRequest& req) {
  if (req.method == StaticRequest::Method::Other) {
    return text_response(req, 405, {{"Allow", "GET, HEAD"}});
  }
  if (const auto* err = std::get_if<PathError>(&req.path)) {
    return text_response(req, status_for(*err), {}, to_string(*err));
  }
  const std::string& path = std::get<std::string>(req.path);
  switch (req.lookup) {
    case FileLookup::Found:
      return decide_file(req, path);
    case FileLookup::NotFound:
      return text_response(req, 404, {});
    case FileLookup::Forbidden:
      return text_response(req, 403, {});
    case FileLookup::IsDirectory: {
      std::string location = percent_encode_path(path + "/");
      if (!req.query.empty()) location += "?" + req.query;
      return text_response(req, 301, {{"Location", std::move(location)}});
    }
    case FileLookup::Failed:
      break;
  }
  return text_response(req, 500, {});
}

std::variant<std::string, FileLookup> map_to_file(std::string_view root_realpath,
                                                  std::string_view normalised_path) {
  if (normalised_path.empty() || normalised_path.front() != '/') return FileLookup::NotFound;
  std::string root(root_realpath);
  while (!root.empty() && root.back() == '/') root.pop_back();

  auto resolved = real_path(root + std::string(normalised_path));
  if (const auto* why = std::get_if<FileLookup>(&resolved)) return *why;
  std::string real = std::move(std::get<std::string>(resolved));
  if (!is_inside(root, real)) return FileLookup::Forbidden;

  struct stat st {};
  if (::stat(real.c_str(), &st) != 0) return lookup_for_errno(errno);
  const bool wants_directory = normalised_path.back() == '/';
  if (S_ISDIR(st.st_mode)) {
    if (!wants_directory) return FileLookup::IsDirectory;
    // The index may itself be a symlink: resolve and check it the same way.
    auto index = real_path(real + "/index.html");
    if (const auto* why = std::get_if<FileLookup>(&index)) return *why;
    real = std::move(std::get<std::string>(index));
    if (!is_inside(root, real)) return FileLookup::Forbidden;
    if (::stat(real.c_str(), &st) != 0) return lookup_for_errno(errno);
    if (S_ISDIR(st.st_mode)) return FileLookup::NotFound;
  } else if (wants_directory) {
    return FileLookup::NotFound;  // "file.html/" names no directory
  }
  if (!S_ISREG(st.st_mode)) return FileLookup::Forbidden;
  return real;
}

StaticSite::StaticSite(std::string www_root, std::map<std::string, std::string> aliases)
    : www_root_(std::move(www_root)), aliases_(std::move(aliases)) {}

bool StaticSite::handle(evhttp_request* req) const {
  if (!req) return false;
  StaticRequest sr;
  switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: sr.method = StaticRequest::Method::Get; break;
    case EVHTTP_REQ_HEAD: sr.method = StaticRequest::Method::Head; break;
    default: sr.method = StaticRequest::Method::Other; break;
  }

  // evhttp keeps the path still percent-encoded; absolute-form requests
  // ("GET http://host HTTP/1.1") may have an empty one, which means "/".
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* raw_path = uri ? evhttp_uri_get_path(uri) : nullptr;
  sr.path = normalise_request_path(raw_path && *raw_path ? raw_path : (uri ? "/" : ""));
  if (const char* q = uri ? evhttp_uri_get_query(uri) : nullptr) sr.query = q;
  sr.if_none_match = header_of(req, "If-None-Match");
  sr.if_modified_since = header_of(req, "If-Modified-Since");
  sr.range = header_of(req, "Range");
  sr.if_range = header_of(req, "If-Range");

  UniqueFd fd;
  const auto* path = std::get_if<std::string>(&sr.path);
  if (sr.method != StaticRequest::Method::Other && path) {
    std::variant<std::string, FileLookup> target = FileLookup::NotFound;
    if (auto alias = aliases_.find(*path); alias != aliases_.end()) {
      sr.is_alias = true;
      target = real_path(alias->second);
    } else if (auto root = real_path(www_root_); std::holds_alternative<std::string>(root)) {
      target = map_to_file(std::get<std::string>(root), *path);
    }  // a root that does not resolve serves nothing: 404
    if (const auto* file = std::get_if<std::string>(&target)) {
      sr.lookup = open_regular(*file, fd, sr.meta);
    } else {
      sr.lookup = std::get<FileLookup>(target);
    }
  }

  respond(req, decide(sr), std::move(fd));
  return true;
}

}  // namespace netwine::http
