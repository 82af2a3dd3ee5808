// nwbench: netwine's own load generator (docs/PERFORMANCE.md says how run.sh uses it).
//
//   nwbench ws-tput     --url ws://127.0.0.1:P/PATH | tcp://127.0.0.1:P  [-c N] [-s SIZE] [-m BYTES] [-w WINDOW]
//                       (wss:// and tls:// are the same over TLS: certificates are not checked)
//   nwbench ws-lat      --url ...  [-s 32] [-t SECS] [--warm SECS]
//   nwbench ws-conns    --url ...  [-k K] [--par P] [--hold SECS] [--pid PID]
//   nwbench stream-tput --url http://127.0.0.1:P[/netwine/] --target 127.0.0.1:E [-c N] [-s SEND] [-m BYTES] [-w WINDOW]
//   nwbench poll-rtt    --url http://... --target ... [-c C] [-s 32] [-t SECS]
//   nwbench poll-idle   --url http://... --target ... [-k K] [--par P] [--hold SECS] [--pid PID]
//   common: -t SECS (every run is capped), --proto NAME (Sec-WebSocket-Protocol), --label TEXT,
//           --pid PID (the server: CPU% over the measured interval, RSS per connection),
//           --tpid PID (the echo target: CPU%).
//
// Each run prints exactly one `key=value ...` line on stdout (progress and errors go
// to stderr). Exit status: 0 ok, 1 an echoed byte differed from what was sent,
// 2 bad usage, 3 the run could not be set up (refused, HTTP error, timeout).
//
// Why it is built the way it is: the client shares two cores with the server and
// the echo target, so it must be cheap per byte. One thread on libevent, but with
// plain `event`s and our own recv()/writev() into large buffers, NOT bufferevents
// (those read at most 4096 bytes per call in libevent 2.1.12, LIBEVENT-NOTES
// "Speed"). WebSocket frames are built and masked once before the clock starts and
// sent from a ring of whole frames; received payload is checked with memcmp against
// a periodic pattern, so checking costs one pass over the bytes and no allocation.
// tcp:// URLs speak raw TCP, for the echo target itself and for socat. wss:// and
// tls:// put TLS under them (OpenSSL, non-blocking SSL_read/SSL_write on the same
// events), to measure TLS-terminating bridges; peers are not verified: loopback only.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "event_handles.hpp"
#include "tunnel/codec.hpp"
#include "ws/frame.hpp"
#include "ws/handshake.hpp"

namespace nwbench {
namespace {

using netwine::EventBasePtr;
using netwine::EventPtr;

// ------------------------------------------------------------------ limits

// Bytes asked of one recv(): large, so that a 64 KiB message costs a few syscalls.
constexpr size_t kReadChunk = 256 * 1024;
// Bytes handed to one writev() from the frame ring; the kernel takes what fits.
constexpr size_t kWriteChunk = 1024 * 1024;
// The ring of pre-masked frames covers at least this many payload bytes, so the
// checked pattern does not repeat too soon to notice a misplaced block.
constexpr size_t kMinPatternPeriod = 1024 * 1024;
// Distinct frames in the ring at the least (distinct masking keys and payloads).
constexpr size_t kMinRingFrames = 16;
// Longest HTTP response head we accept (netwine's own limit for requests is 16K).
constexpr size_t kMaxResponseHead = 64 * 1024;
// Longest non-data line of the tunnel framing (PROTOCOL.md: readers accept 4096).
constexpr size_t kMaxFrameLine = netwine::tunnel::kMaxControlLine + 64;
// Acknowledge the stream at least this often (PROTOCOL.md: a quarter of the 1 MiB
// default session buffer), even when no upload would carry the ack.
constexpr uint64_t kAckEvery = 256 * 1024;

// Exit statuses.
constexpr int kExitOk = 0;
constexpr int kExitMismatch = 1;  // echoed bytes differ from what was sent
constexpr int kExitUsage = 2;
constexpr int kExitSetup = 3;  // could not connect, HTTP error, nothing measured

// ------------------------------------------------------------------ basics

uint64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}
double now_s() { return static_cast<double>(now_ns()) * 1e-9; }

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
uint64_t rnd() {
  uint64_t x = g_rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return g_rng = x;
}

[[noreturn]] void die(int code, const std::string& msg) {
  std::fprintf(stderr, "nwbench: %s\n", msg.c_str());
  std::exit(code);
}

std::optional<uint64_t> parse_size(std::string_view s) {
  if (s.empty()) return std::nullopt;
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || v < 0) return std::nullopt;
  std::string_view suffix(p, static_cast<size_t>(s.data() + s.size() - p));
  if (suffix == "K" || suffix == "k") v *= 1024;
  else if (suffix == "M" || suffix == "m") v *= 1024.0 * 1024;
  else if (suffix == "G" || suffix == "g") v *= 1024.0 * 1024 * 1024;
  else if (!suffix.empty()) return std::nullopt;
  return static_cast<uint64_t>(v);
}

// First mismatch seen; the run goes on to its end so the line is still printed.
std::string g_mismatch;
void report_mismatch(const std::string& what) {
  if (g_mismatch.empty()) g_mismatch = what;
}

// ------------------------------------------------------------------ options

struct Options {
  std::string mode;
  std::string url;
  std::string target;  // stream/poll modes: what to open through netwine
  std::string proto;   // Sec-WebSocket-Protocol offer
  std::string label;
  int conns = 1;
  uint64_t size = 0;  // 0: the mode's default
  uint64_t bytes = 64ull << 30;
  uint64_t window = 4ull << 20;
  double secs = 0;  // 0: the mode's default
  double warm = 0.2;
  int k = 500;
  int par = 32;
  double hold = 0.3;
  int pid = 0;
  int tpid = 0;
  std::string kind;  // serve: echo | sink | source
};

void usage() {
  std::fputs(
      "usage: nwbench MODE --url URL [options]\n"
      "  ws-tput     --url ws://127.0.0.1:P/PATH|tcp://127.0.0.1:P [-c N] [-s SIZE] [-m BYTES] [-w WINDOW] [-t S]\n"
      "  ws-lat      --url ... [-s 32] [-t S] [--warm S]\n"
      "  ws-conns    --url ... [-k K] [--par P] [--hold S] [--pid PID]\n"
      "  stream-tput --url http://127.0.0.1:P[/netwine/] --target 127.0.0.1:E [-c N] [-s SEND] [-m BYTES] [-w WINDOW]\n"
      "  poll-rtt    --url http://... --target ... [-c C] [-s 32] [-t S]\n"
      "  poll-idle   --url http://... --target ... [-k K] [--par P] [--hold S] [--pid PID]\n"
      "  ws-up       --url ws://...|tcp://... (to a sink) [-c N] [-s SIZE] [-t S]: payload written per second\n"
      "  ws-down     --url ws://...|tcp://... (from a source) [-c N] [-t S]: payload read and checked per second\n"
      "  serve       --url tcp://127.0.0.1:P --kind echo|sink|source: a target server (runs until killed)\n"
      "  common: --proto NAME --label TEXT --pid PID --tpid PID; sizes take K/M/G (powers of 1024)\n"
      "  loopback addresses only; one key=value line per run on stdout\n",
      stderr);
}

Options parse_options(int argc, char** argv) {
  if (argc < 2) {
    usage();
    std::exit(kExitUsage);
  }
  Options o;
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    auto val = [&]() -> std::string_view {
      if (i + 1 >= argc) die(kExitUsage, "missing value after " + std::string(a));
      return argv[++i];
    };
    auto size = [&]() {
      std::string_view v = val();
      auto n = parse_size(v);
      if (!n) die(kExitUsage, "bad size: " + std::string(v));
      return *n;
    };
    auto num = [&]() {
      std::string_view v = val();
      char* end = nullptr;
      std::string s(v);
      double d = std::strtod(s.c_str(), &end);
      if (end == s.c_str() || *end || d < 0) die(kExitUsage, "bad number: " + s);
      return d;
    };
    if (a == "--url") o.url = val();
    else if (a == "--target") o.target = val();
    else if (a == "--proto") o.proto = val();
    else if (a == "--label") o.label = val();
    else if (a == "-c") o.conns = static_cast<int>(num());
    else if (a == "-s") o.size = size();
    else if (a == "-m") o.bytes = size();
    else if (a == "-w") o.window = size();
    else if (a == "-t") o.secs = num();
    else if (a == "--warm") o.warm = num();
    else if (a == "-k") o.k = static_cast<int>(num());
    else if (a == "--par") o.par = static_cast<int>(num());
    else if (a == "--hold") o.hold = num();
    else if (a == "--pid") o.pid = static_cast<int>(num());
    else if (a == "--tpid") o.tpid = static_cast<int>(num());
    else if (a == "--kind") o.kind = val();
    else if (a == "-h" || a == "--help") {
      usage();
      std::exit(kExitOk);
    } else {
      die(kExitUsage, "unknown option " + std::string(a));
    }
  }
  if (o.url.empty()) die(kExitUsage, "--url is required");
  if (o.conns < 1 || o.k < 1 || o.par < 1) die(kExitUsage, "-c, -k and --par must be >= 1");
  return o;
}

// ------------------------------------------------------------------ endpoints

// Only loopback: a load generator must not be pointed at someone else's host.
bool resolve_loopback(const std::string& host, int port, sockaddr_storage& ss, socklen_t& len) {
  std::memset(&ss, 0, sizeof ss);
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  if (!h.empty() && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) return false;
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v4;
    return true;
  }
  if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return false;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v6;
    return true;
  }
  return false;
}

// Splits "host:port" / "[v6]:port"; false when malformed.
bool split_host_port(std::string_view hp, std::string& host, int& port) {
  size_t colon = hp.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  host = std::string(hp.substr(0, colon));
  std::string_view p = hp.substr(colon + 1);
  auto [e, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  return ec == std::errc() && e == p.data() + p.size() && port > 0 && port < 65536;
}

struct Endpoint {
  enum class Scheme { Ws, Tcp, Http } scheme;
  bool tls = false;  // wss:// or tls://
  sockaddr_storage addr;
  socklen_t addr_len = 0;
  std::string host_header;  // "host:port" as given
  std::string path;         // ws: request path; http: the netwine prefix ending in '/'
};

Endpoint parse_url(const std::string& url) {
  Endpoint ep{};
  std::string_view u = url, rest;
  if (u.starts_with("ws://")) ep.scheme = Endpoint::Scheme::Ws, rest = u.substr(5);
  else if (u.starts_with("wss://")) ep.scheme = Endpoint::Scheme::Ws, ep.tls = true, rest = u.substr(6);
  else if (u.starts_with("tcp://")) ep.scheme = Endpoint::Scheme::Tcp, rest = u.substr(6);
  else if (u.starts_with("tls://")) ep.scheme = Endpoint::Scheme::Tcp, ep.tls = true, rest = u.substr(6);
  else if (u.starts_with("http://")) ep.scheme = Endpoint::Scheme::Http, rest = u.substr(7);
  else die(kExitUsage, "URL must start with ws://, wss://, tcp://, tls:// or http://: " + url);
  size_t slash = rest.find('/');
  std::string_view hp = rest.substr(0, slash);
  ep.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::string host;
  int port = 0;
  if (!split_host_port(hp, host, port)) die(kExitUsage, "URL needs host:port: " + url);
  if (!resolve_loopback(host, port, ep.addr, ep.addr_len))
    die(kExitUsage, "refusing a non-loopback address (use 127.0.0.0/8 or ::1): " + host);
  ep.host_header = std::string(hp);
  if (ep.scheme == Endpoint::Scheme::Http) {
    if (ep.path == "/") ep.path = "/netwine/";
    if (ep.path.back() != '/') ep.path += '/';
  }
  return ep;
}

// ------------------------------------------------------------------ /proc

// A process tree's resources, for fork-per-connection bridges (socat, websockify)
// as well as single-process ones.
struct ProcStat {
  bool ok = false;
  int nprocs = 0;
  long main_rss_kb = 0, tree_rss_kb = 0, tree_pss_kb = 0;
  double cpu_s = 0;  // user+system over the tree, reaped children included
};

bool slurp(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.clear();
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return true;
}

long field_kb(const std::string& text, std::string_view name) {
  size_t p = text.find(name);
  if (p == std::string::npos) return 0;
  return std::strtol(text.c_str() + p + name.size(), nullptr, 10);
}

// Fields of /proc/PID/stat after the command name: ppid is field 4, utime..cstime 14..17.
bool read_stat(int pid, int& ppid, double& cpu) {
  std::string s;
  if (!slurp("/proc/" + std::to_string(pid) + "/stat", s)) return false;
  size_t rp = s.rfind(')');
  if (rp == std::string::npos) return false;
  std::vector<long long> f;
  const char* p = s.c_str() + rp + 2;
  while (*p) {
    while (*p == ' ') ++p;
    if (!*p) break;
    if (f.empty()) {  // state letter
      f.push_back(0);
      while (*p && *p != ' ') ++p;
      continue;
    }
    char* e;
    f.push_back(std::strtoll(p, &e, 10));
    p = e;
    if (f.size() > 16) break;
  }
  if (f.size() < 15) return false;
  ppid = static_cast<int>(f[1]);  // field 4 (fields start at 3 here)
  static const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  cpu = static_cast<double>(f[11] + f[12] + f[13] + f[14]) / tick;
  return true;
}

ProcStat read_proc_tree(int root) {
  ProcStat st;
  if (root <= 0) return st;
  std::map<int, std::vector<int>> children;
  std::map<int, double> cpu;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      int pid = std::atoi(e->d_name);
      if (pid <= 0) continue;
      int ppid = 0;
      double c = 0;
      if (!read_stat(pid, ppid, c)) continue;
      children[ppid].push_back(pid);
      cpu[pid] = c;
    }
    closedir(d);
  }
  if (!cpu.count(root)) return st;
  std::vector<int> todo{root};
  std::string text;
  while (!todo.empty()) {
    int p = todo.back();
    todo.pop_back();
    st.nprocs++;
    st.cpu_s += cpu[p];
    if (slurp("/proc/" + std::to_string(p) + "/status", text)) {
      long rss = field_kb(text, "VmRSS:");
      if (p == root) st.main_rss_kb = rss;
      st.tree_rss_kb += rss;
    }
    if (slurp("/proc/" + std::to_string(p) + "/smaps_rollup", text)) st.tree_pss_kb += field_kb(text, "Pss:");
    for (int c : children[p]) todo.push_back(c);
  }
  st.ok = true;
  return st;
}

double self_cpu_s() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// CPU of the client, the server tree and the target over one measured interval.
class CpuMeter {
 public:
  CpuMeter(int pid, int tpid) : pid_(pid), tpid_(tpid) {}
  void start() {
    t0_ = now_s();
    self0_ = self_cpu_s();
    srv0_ = read_proc_tree(pid_).cpu_s;
    tgt0_ = read_proc_tree(tpid_).cpu_s;
  }
  // " client_cpu=..% client_cpu_s=.. server_cpu=..% server_cpu_s=.. target_cpu=..% target_cpu_s=.."
  // (the server and target fields with --pid/--tpid; *_s are CPU seconds).
  std::string stop() const {
    double dt = std::max(1e-9, now_s() - t0_);
    char b[256];
    double c = self_cpu_s() - self0_;
    int n = std::snprintf(b, sizeof b, " client_cpu=%.0f client_cpu_s=%.3f", c / dt * 100, c);
    if (pid_ > 0) {
      double d = read_proc_tree(pid_).cpu_s - srv0_;
      n += std::snprintf(b + n, sizeof b - static_cast<size_t>(n), " server_cpu=%.0f server_cpu_s=%.3f", d / dt * 100, d);
    }
    if (tpid_ > 0) {
      double d = read_proc_tree(tpid_).cpu_s - tgt0_;
      std::snprintf(b + n, sizeof b - static_cast<size_t>(n), " target_cpu=%.0f target_cpu_s=%.3f", d / dt * 100, d);
    }
    return b;
  }

 private:
  int pid_, tpid_;
  double t0_ = 0, self0_ = 0, srv0_ = 0, tgt0_ = 0;
};

// ------------------------------------------------------------------ pattern

// The bytes every mode sends: a random block of `period` bytes repeated forever.
// Byte x of a stream is at(x)[0]; any range of up to `period` bytes is contiguous
// in memory (the block is stored twice), so a check is one memcmp.
class Pattern {
 public:
  explicit Pattern(size_t period) : period_(period), buf_(2 * period) {
    for (size_t i = 0; i < period; ++i) buf_[i] = static_cast<uint8_t>(rnd() >> 24);
    std::memcpy(buf_.data() + period, buf_.data(), period);
  }
  size_t period() const { return period_; }
  const uint8_t* at(uint64_t off) const { return buf_.data() + off % period_; }
  bool check(uint64_t off, const uint8_t* p, size_t n) const {
    while (n) {
      size_t k = std::min(n, period_);
      if (std::memcmp(at(off), p, k) != 0) return false;
      off += k, p += k, n -= k;
    }
    return true;
  }

 private:
  size_t period_;
  std::vector<uint8_t> buf_;
};

// Whole client frames (or raw messages for tcp://) carrying the pattern, message
// after message: frame j carries pattern bytes [j*S, (j+1)*S). The ring holds one
// pattern period, so sending wraps around it forever without touching a byte.
class FrameRing {
 public:
  FrameRing(const Pattern& pat, size_t msg, bool ws) {
    size_t frames = pat.period() / msg;
    uint8_t hdr[netwine::ws::kMaxHeader];
    for (size_t j = 0; j < frames; ++j) {
      const uint8_t* payload = pat.at(j * msg);
      if (!ws) {
        bytes_.insert(bytes_.end(), payload, payload + msg);
        continue;
      }
      uint8_t key[4];
      do {
        uint64_t r = rnd();
        std::memcpy(key, &r, 4);
      } while (key[0] == 0 && key[1] == 0 && key[2] == 0 && key[3] == 0);
      size_t h = netwine::ws::encode_header(hdr, netwine::ws::Opcode::Binary, true, msg, key);
      size_t at = bytes_.size();
      bytes_.insert(bytes_.end(), hdr, hdr + h);
      bytes_.insert(bytes_.end(), payload, payload + msg);
      netwine::ws::apply_mask(bytes_.data() + at + h, msg, key, 0);
    }
    frame_ = bytes_.size() / frames;
  }
  size_t frame_size() const { return frame_; }  // wire bytes of one message
  size_t size() const { return bytes_.size(); }
  const uint8_t* data() const { return bytes_.data(); }

 private:
  size_t frame_ = 0;
  std::vector<uint8_t> bytes_;
};

// Pattern period for messages of `msg` bytes: whole messages, at least
// kMinPatternPeriod bytes and kMinRingFrames messages.
size_t period_for(size_t msg) {
  size_t frames = std::max(kMinRingFrames, (kMinPatternPeriod + msg - 1) / msg);
  return frames * msg;
}

// Masks a small client frame (lat, conns probes, pongs, close).
std::string client_frame(netwine::ws::Opcode op, const uint8_t* payload, size_t n) {
  uint8_t key[4];
  uint64_t r = rnd() | 1;
  std::memcpy(key, &r, 4);
  auto v = netwine::ws::encode_frame(op, std::span<const uint8_t>(payload, n), true, key);
  return std::string(v.begin(), v.end());
}

// ------------------------------------------------------------------ HTTP response parser

// Incremental HTTP/1.1 response reader: head, then a Content-Length, chunked or
// close-delimited body, then the next response on the same connection. Pure.
class ResponseParser {
 public:
  struct Head {
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    const std::string* get(std::string_view name) const {
      for (auto& [k, v] : headers)
        if (k == name) return &v;
      return nullptr;
    }
  };
  struct Sink {
    virtual ~Sink() = default;
    // A status 101 stops the parser: the rest of the input is the upgraded protocol's.
    virtual void on_head(const Head& h) = 0;
    virtual void on_body(const uint8_t* p, size_t n) = 0;
    virtual void on_end() = 0;
  };

  // Consumes input; returns how many bytes were used (fewer than n only after a
  // 101), or -1 on a malformed response.
  ssize_t feed(const uint8_t* p, size_t n, Sink& sink) {
    size_t i = 0;
    while (i < n) {
      switch (state_) {
        case State::Head: {
          const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p + i, '\n', n - i));
          size_t take = nl ? static_cast<size_t>(nl - (p + i)) + 1 : n - i;
          line_.append(reinterpret_cast<const char*>(p + i), take);
          i += take;
          if (line_.size() > kMaxResponseHead) return -1;
          if (!nl) break;
          if (line_.size() >= 4 && line_.ends_with("\r\n\r\n")) {
            if (!parse_head()) return -1;
            line_.clear();
            sink.on_head(head_);
            if (head_.status == 101) {
              state_ = State::Upgraded;
              return static_cast<ssize_t>(i);
            }
            start_body(sink);
          }
          break;
        }
        case State::Length: {
          size_t take = static_cast<size_t>(std::min<uint64_t>(left_, n - i));
          sink.on_body(p + i, take);
          i += take;
          left_ -= take;
          if (left_ == 0) finish(sink);
          break;
        }
        case State::ChunkSize:
        case State::ChunkEnd:
        case State::Trailer: {
          const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p + i, '\n', n - i));
          size_t take = nl ? static_cast<size_t>(nl - (p + i)) + 1 : n - i;
          line_.append(reinterpret_cast<const char*>(p + i), take);
          i += take;
          if (line_.size() > 1024) return -1;
          if (!nl) break;
          std::string line = std::move(line_);
          line_.clear();
          while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
          if (state_ == State::ChunkEnd) {
            if (!line.empty()) return -1;
            state_ = State::ChunkSize;
          } else if (state_ == State::Trailer) {
            if (line.empty()) finish(sink);
          } else {
            uint64_t size = 0;
            auto [e, ec] = std::from_chars(line.data(), line.data() + line.size(), size, 16);
            if (ec != std::errc() || (e != line.data() + line.size() && *e != ';')) return -1;
            if (size == 0) state_ = State::Trailer;
            else left_ = size, state_ = State::ChunkData;
          }
          break;
        }
        case State::ChunkData: {
          size_t take = static_cast<size_t>(std::min<uint64_t>(left_, n - i));
          sink.on_body(p + i, take);
          i += take;
          left_ -= take;
          if (left_ == 0) state_ = State::ChunkEnd;
          break;
        }
        case State::UntilClose:
          sink.on_body(p + i, n - i);
          i = n;
          break;
        case State::Upgraded:
          return static_cast<ssize_t>(i);
      }
    }
    return static_cast<ssize_t>(i);
  }

  // The peer closed: ends a close-delimited body; false if a response was cut.
  bool eof(Sink& sink) {
    if (state_ == State::UntilClose) {
      finish(sink);
      return true;
    }
    return state_ == State::Head && line_.empty();
  }
  bool idle() const { return state_ == State::Head && line_.empty(); }
  bool wants_close() const { return close_; }

 private:
  enum class State { Head, Length, ChunkSize, ChunkData, ChunkEnd, Trailer, UntilClose, Upgraded };

  bool parse_head() {
    head_ = Head{};
    std::string_view h = line_;
    size_t eol = h.find("\r\n");
    std::string_view status_line = h.substr(0, eol);
    if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12) return false;
    auto [e, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, head_.status);
    if (ec != std::errc()) return false;
    http10_ = status_line[7] == '0';
    h.remove_prefix(eol + 2);
    while (!h.empty() && !h.starts_with("\r\n")) {
      size_t end = h.find("\r\n");
      std::string_view l = h.substr(0, end);
      h.remove_prefix(end + 2);
      size_t colon = l.find(':');
      if (colon == std::string_view::npos) return false;
      std::string name(l.substr(0, colon));
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string_view v = l.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      head_.headers.emplace_back(std::move(name), std::string(v));
    }
    return true;
  }

  void start_body(Sink& sink) {
    const std::string* te = head_.get("transfer-encoding");
    const std::string* cl = head_.get("content-length");
    const std::string* conn = head_.get("connection");
    close_ = http10_ || (conn && strcasecmp(conn->c_str(), "close") == 0);
    if (head_.status == 204 || head_.status == 304 || head_.status / 100 == 1) {
      finish(sink);
    } else if (te && strcasecmp(te->c_str(), "chunked") == 0) {
      state_ = State::ChunkSize;
    } else if (cl) {
      left_ = std::strtoull(cl->c_str(), nullptr, 10);
      if (left_ == 0) finish(sink);
      else state_ = State::Length;
    } else {
      state_ = State::UntilClose;
      close_ = true;
    }
  }
  void finish(Sink& sink) {
    state_ = State::Head;
    sink.on_end();
  }

  State state_ = State::Head;
  std::string line_;  // head, or the current chunk-size / trailer line
  Head head_;
  uint64_t left_ = 0;
  bool http10_ = false, close_ = false;
};

// ------------------------------------------------------------------ tunnel frames

// Reader of netwine's binary framing (docs/PROTOCOL.md §3) for stream and poll
// bodies. Unlike tunnel::FrameReader it never copies payload: data comes out as
// pieces of the input with their stream offsets. Pure.
class TunnelReader {
 public:
  struct Sink {
    virtual ~Sink() = default;
    virtual void on_ok(std::string_view key) = 0;
    virtual void on_data(uint64_t offset, const uint8_t* p, size_t n) = 0;
    virtual void on_recycle() = 0;
    virtual void on_close(int code, std::string_view reason) = 0;
  };
  // false on a malformed frame.
  bool feed(const uint8_t* p, size_t n, Sink& sink) {
    while (n) {
      if (data_left_) {
        size_t take = static_cast<size_t>(std::min<uint64_t>(data_left_, n));
        sink.on_data(data_off_, p, take);
        data_off_ += take, data_left_ -= take, p += take, n -= take;
        continue;
      }
      const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p, '\n', n));
      size_t take = nl ? static_cast<size_t>(nl - p) + 1 : n;
      line_.append(reinterpret_cast<const char*>(p), take);
      p += take, n -= take;
      if (line_.size() > kMaxFrameLine) return false;
      if (!nl) continue;
      line_.pop_back();
      if (!on_line(sink)) return false;
      line_.clear();
    }
    return true;
  }
  void reset() {
    line_.clear();
    data_left_ = 0;
  }

 private:
  bool on_line(Sink& sink) {
    std::string_view l = line_;
    if (l.starts_with("D ")) {
      l.remove_prefix(2);
      size_t sp = l.find(' ');
      if (sp == std::string_view::npos) return false;
      uint64_t len = 0;
      auto r1 = std::from_chars(l.data(), l.data() + sp, data_off_);
      auto r2 = std::from_chars(l.data() + sp + 1, l.data() + l.size(), len);
      if (r1.ec != std::errc() || r2.ec != std::errc() || r2.ptr != l.data() + l.size()) return false;
      data_left_ = len;
      return true;
    }
    if (l.starts_with("OK ")) sink.on_ok(l.substr(3));
    else if (l == "R") sink.on_recycle();
    else if (l.starts_with("C ")) {
      int code = 0;
      auto r = std::from_chars(l.data() + 2, l.data() + l.size(), code);
      std::string_view reason = r.ptr < l.data() + l.size() ? std::string_view(r.ptr + 1, l.data() + l.size()) : "";
      sink.on_close(code, reason);
    } else if (l != "H" && !l.starts_with("P")) {
      return false;
    }
    return true;
  }
  std::string line_;
  uint64_t data_off_ = 0, data_left_ = 0;
};

// ------------------------------------------------------------------ connections

uint8_t g_rx[kReadChunk];  // one thread: every connection reads into this buffer

// One TCP connection on the shared event_base: non-blocking connect, a read event
// that stays armed, a write event armed only while output is pending. Output is a
// small owned string plus at most one borrowed span (an upload body that lives in
// the Pattern), sent with one writev. Objects are freed after the loop ends, never
// inside their own callbacks (STYLE habit 6): shutdown() only disarms and closes.
// The one client context of wss:// and tls:// connections. No verification: the
// bridges under test use throwaway self-signed certificates on loopback. Partial
// writes, so that SSL_write behaves like writev() (returns what the socket took).
SSL_CTX* client_tls_context() {
  static SSL_CTX* ctx = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_client_method());
    if (!c) die(kExitSetup, "SSL_CTX_new failed");
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return c;
  }();
  return ctx;
}

std::string tls_error_text() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (!e) return "unknown";
  const char* r = ERR_reason_error_string(e);
  return r ? r : std::to_string(e);
}

// Payload one TLS read wake-up takes at most before letting other connections run.
constexpr size_t kTlsReadPerWake = 1024 * 1024;

class Conn {
 public:
  explicit Conn(event_base* base) : base_(base) {}
  virtual ~Conn() {
    shutdown();
    if (ssl_) SSL_free(ssl_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool connect(const Endpoint& ep) {
    fd_ = ::socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return fail_now("socket", errno);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // A reconnect may run inside the old events' callbacks: keep them until the
    // object dies instead of freeing them there.
    if (rev_) retired_.push_back(std::move(rev_));
    if (wev_) retired_.push_back(std::move(wev_));
    rev_.reset(event_new(base_, fd_, EV_READ | EV_PERSIST, &Conn::on_read_cb, this));
    wev_.reset(event_new(base_, fd_, EV_WRITE | EV_PERSIST, &Conn::on_write_cb, this));
    connecting_ = true;
    tls_ = ep.tls;
    if (ssl_) SSL_free(ssl_), ssl_ = nullptr;
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&ep.addr), ep.addr_len) != 0 && errno != EINPROGRESS)
      return fail_now("connect", errno);
    event_add(wev_.get(), nullptr);
    return true;
  }

  void shutdown() {
    if (fd_ < 0) return;
    if (rev_) event_del(rev_.get());
    if (wev_) event_del(wev_.get());
    ::close(fd_);
    fd_ = -1;
  }
  bool open() const { return fd_ >= 0; }

 protected:
  // Called once the TCP connection is up.
  virtual void on_connected() = 0;
  // Bytes arrived (valid during the call).
  virtual void on_bytes(uint8_t* p, size_t n) = 0;
  // The connection failed or the peer closed; `what` says which. The connection is closed.
  virtual void on_gone(const std::string& what) = 0;
  // Output drained (the owned and the borrowed part): produce more if you like.
  virtual void on_drained() {}

  // Queues bytes and tries to send at once.
  void send(std::string_view bytes, const uint8_t* borrowed = nullptr, size_t borrowed_len = 0) {
    out_.append(bytes);
    if (borrowed_len) {
      ext_ = borrowed;
      ext_len_ = borrowed_len;
    }
    flush();
  }
  bool output_pending() const { return out_pos_ < out_.size() || ext_len_ > 0; }
  // Calls on_drained() once the socket takes more (it may do so at once).
  void want_write() {
    if (fd_ >= 0) event_add(wev_.get(), nullptr);
  }

  // writev() from two spans; returns bytes written, 0 on EAGAIN (write event
  // armed), -1 after failing the connection.
  ssize_t write_raw(const uint8_t* a, size_t alen, const uint8_t* b, size_t blen) {
    if (ssl_) {
      // One span per call (no writev for TLS): the caller comes back for the rest.
      ssize_t w = write_tls(alen ? a : b, alen ? alen : blen);
      if (w >= 0 && static_cast<size_t>(w) < alen + blen) event_add(wev_.get(), nullptr);
      return w;
    }
    iovec iov[2] = {{const_cast<uint8_t*>(a), alen}, {const_cast<uint8_t*>(b), blen}};
    ssize_t w = ::writev(fd_, iov, blen ? 2 : 1);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        event_add(wev_.get(), nullptr);
        return 0;
      }
      gone("write", errno);
      return -1;
    }
    if (static_cast<size_t>(w) < alen + blen) event_add(wev_.get(), nullptr);
    return w;
  }

  event_base* base_;

 private:
  static void on_read_cb(evutil_socket_t, short, void* self) { static_cast<Conn*>(self)->do_read(); }
  static void on_write_cb(evutil_socket_t, short, void* self) { static_cast<Conn*>(self)->do_write(); }

  void do_read() {
    if (ssl_) return read_tls();
    ssize_t n = ::recv(fd_, g_rx, sizeof g_rx, 0);
    if (n > 0) return on_bytes(g_rx, static_cast<size_t>(n));
    if (n == 0) return gone_msg("eof");
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) gone("read", errno);
  }

  void do_write() {
    if (connecting_) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) return gone("connect", err);
      connecting_ = false;
      if (tls_) return start_tls();
      event_del(wev_.get());
      event_add(rev_.get(), nullptr);
      on_connected();
      return;
    }
    if (handshaking_) return handshake();
    event_del(wev_.get());
    if (read_wants_write_) {
      read_wants_write_ = false;
      read_tls();
      if (fd_ < 0) return;
    }
    flush();
    if (fd_ >= 0 && !output_pending()) on_drained();
  }

  void flush() {
    if (fd_ < 0 || connecting_) return;
    while (output_pending()) {
      size_t alen = out_.size() - out_pos_;
      ssize_t w = write_raw(reinterpret_cast<const uint8_t*>(out_.data()) + out_pos_, alen, ext_, ext_len_);
      if (w <= 0) return;
      size_t from_a = std::min(static_cast<size_t>(w), alen);
      out_pos_ += from_a;
      ext_ += static_cast<size_t>(w) - from_a;
      ext_len_ -= static_cast<size_t>(w) - from_a;
      if (out_pos_ == out_.size()) out_.clear(), out_pos_ = 0;
    }
  }

  // ---- TLS: the same events, with SSL_read/SSL_write instead of recv/writev.
  void start_tls() {
    ssl_ = SSL_new(client_tls_context());
    if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1) return gone_msg("tls_setup:" + tls_error_text());
    SSL_set_connect_state(ssl_);
    handshaking_ = true;
    event_add(rev_.get(), nullptr);
    handshake();
  }
  void handshake() {
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      handshaking_ = false;
      event_del(wev_.get());
      on_connected();
      return;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ) return (void)event_del(wev_.get());
    if (e == SSL_ERROR_WANT_WRITE) return (void)event_add(wev_.get(), nullptr);
    gone_msg("tls_handshake:" + tls_error_text());
  }
  // Reads until the socket has nothing more (SSL_read returns one record at a time),
  // or kTlsReadPerWake was handed on with nothing left inside OpenSSL.
  void read_tls() {
    if (handshaking_) return handshake();
    size_t got = 0;
    for (;;) {
      int n = SSL_read(ssl_, g_rx, static_cast<int>(sizeof g_rx));
      if (n > 0) {
        on_bytes(g_rx, static_cast<size_t>(n));
        if (fd_ < 0) return;
        got += static_cast<size_t>(n);
        if (got >= kTlsReadPerWake && SSL_pending(ssl_) == 0) return;
        continue;
      }
      int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_WANT_READ) return;
      if (e == SSL_ERROR_WANT_WRITE) {
        read_wants_write_ = true;
        event_add(wev_.get(), nullptr);
        return;
      }
      if (e == SSL_ERROR_ZERO_RETURN) return gone_msg("eof");
      if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) return gone_msg("eof");
      return gone_msg("tls_read:" + tls_error_text());
    }
  }
  // Like write_raw: bytes taken (SSL_write takes a record at a time in partial
  // mode: loop until the socket is full), 0 when none, -1 failed; write_raw arms
  // the write event when not all was taken.
  ssize_t write_tls(const uint8_t* p, size_t n) {
    size_t done = 0;
    while (done < n) {
      int w = SSL_write(ssl_, p + done, static_cast<int>(std::min(n - done, kWriteChunk)));
      if (w > 0) {
        done += static_cast<size_t>(w);
        continue;
      }
      int e = SSL_get_error(ssl_, w);
      // WANT_READ (no renegotiation in TLS 1.3; kept for 1.2 peers): the read
      // event is armed, and the next write event retries.
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) break;
      gone_msg("tls_write:" + tls_error_text());
      return -1;
    }
    return static_cast<ssize_t>(done);
  }

  bool fail_now(const char* op, int err) {
    gone(op, err);
    return false;
  }
  void gone(const char* op, int err) { gone_msg(std::string(op) + ":" + std::strerror(err)); }
  void gone_msg(const std::string& what) {
    shutdown();
    on_gone(what);
  }

  int fd_ = -1;
  bool connecting_ = false;
  bool tls_ = false;
  bool handshaking_ = false;
  bool read_wants_write_ = false;  // SSL_read asked for a writable socket
  SSL* ssl_ = nullptr;
  EventPtr rev_, wev_;
  std::vector<EventPtr> retired_;
  std::string out_;
  size_t out_pos_ = 0;
  const uint8_t* ext_ = nullptr;
  size_t ext_len_ = 0;
};

// A connection that carries an echoed byte stream: raw TCP, or WebSocket binary
// messages after the opening handshake. Subclasses see payload bytes only.
class EchoConn : public Conn, private ResponseParser::Sink, private netwine::ws::Handler {
 public:
  EchoConn(event_base* base, const Endpoint& ep, const Options& o)
      : Conn(base), ep_(ep), opt_(o), ws_(ep.scheme == Endpoint::Scheme::Ws),
        decoder_(netwine::ws::Role::Client, 1ull << 40) {}
  bool ready() const { return ready_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  uint64_t pings() const { return pings_; }

 protected:
  virtual void on_ready() = 0;                               // handshake done (or TCP up)
  virtual void on_payload(const uint8_t* p, size_t n) = 0;   // echoed payload bytes
  virtual void on_read_done() {}                             // after a whole recv() was handled
  virtual void on_failed() {}

  // A control frame to send at the next frame boundary (pong, close).
  std::string pending_control_;
  bool ws() const { return ws_; }

  void fail(const std::string& why) {
    if (error_.empty()) error_ = why;
    shutdown();
    on_failed();
  }

 private:
  void on_connected() override {
    if (!ws_) {
      ready_ = true;
      on_ready();
      return;
    }
    uint8_t raw[16];
    for (auto& b : raw) b = static_cast<uint8_t>(rnd() >> 32);
    key_ = netwine::tunnel::base64_encode(std::span<const uint8_t>(raw, 16));
    std::string req = "GET " + ep_.path + " HTTP/1.1\r\nHost: " + ep_.host_header +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key_ +
                      "\r\nSec-WebSocket-Version: 13\r\n";
    if (!opt_.proto.empty()) req += "Sec-WebSocket-Protocol: " + opt_.proto + "\r\n";
    req += "\r\n";
    send(req);
  }

  void on_bytes(uint8_t* p, size_t n) override {
    consume(p, n);
    if (open()) on_read_done();
  }
  void consume(uint8_t* p, size_t n) {
    if (!ws_) return on_payload(p, n);
    if (!ready_) {
      ssize_t used = http_.feed(p, n, *this);
      if (used < 0) return fail("bad_http_response");
      if (!open()) return;  // on_head failed us
      if (!ready_) return;
      p += used, n -= static_cast<size_t>(used);
      if (n == 0) return;
    }
    if (auto err = decoder_.feed(std::span<uint8_t>(p, n), *this)) fail("ws_protocol_error");
  }

  void on_gone(const std::string& what) override {
    if (error_.empty()) error_ = what;
    on_failed();
  }

  // ResponseParser::Sink: only the 101 matters; anything else ends the attempt.
  void on_head(const ResponseParser::Head& h) override {
    if (h.status != 101) return fail("http" + std::to_string(h.status));
    const std::string* acc = h.get("sec-websocket-accept");
    if (!acc || *acc != netwine::ws::accept_key(key_)) return fail("bad_accept");
    ready_ = true;
    on_ready();
  }
  void on_body(const uint8_t*, size_t) override {}
  void on_end() override {}

  // ws::Handler
  void on_data(netwine::ws::Opcode, std::span<const uint8_t> b) override { on_payload(b.data(), b.size()); }
  void on_message_end(netwine::ws::Opcode) override {}
  void on_ping(std::span<const uint8_t> payload) override {
    ++pings_;
    pending_control_ += client_frame(netwine::ws::Opcode::Pong, payload.data(), payload.size());
  }
  void on_pong(std::span<const uint8_t>) override {}
  void on_close(std::optional<uint16_t> code, std::string_view) override {
    fail("ws_close_" + std::to_string(code.value_or(1005)));
  }

  const Endpoint& ep_;
  const Options& opt_;
  bool ws_;
  bool ready_ = false;
  std::string key_, error_;
  ResponseParser http_;
  netwine::ws::Decoder decoder_;
  uint64_t pings_ = 0;
};

// ------------------------------------------------------------------ the run loop

// The event base plus the run's deadline; modes call stop() when done.
class Loop {
 public:
  Loop() : base_(event_base_new()) {
    if (!base_) die(kExitSetup, "event_base_new failed");
  }
  event_base* base() const { return base_.get(); }
  // Runs until stop() or `secs` from now.
  void run_for(double secs) {
    timeval tv{static_cast<time_t>(secs), static_cast<suseconds_t>((secs - std::floor(secs)) * 1e6)};
    EventPtr t(evtimer_new(base_.get(), [](evutil_socket_t, short, void* b) {
      event_base_loopbreak(static_cast<event_base*>(b));
    }, base_.get()));
    evtimer_add(t.get(), &tv);
    event_base_dispatch(base_.get());
  }
  void stop() { event_base_loopbreak(base_.get()); }

 private:
  EventBasePtr base_;
};

std::string label_kv(const Options& o) {
  return " label=" + (o.label.empty() ? std::string("-") : o.label);
}

int finish_line(const std::string& line) {
  std::string l = line;
  if (!g_mismatch.empty()) l += " verify=FAIL mismatch=" + g_mismatch;
  else l += " verify=ok";
  std::printf("%s\n", l.c_str());
  std::fflush(stdout);
  return g_mismatch.empty() ? kExitOk : kExitMismatch;
}

// The clock of the throughput modes: connects every connection, waits for the
// handshakes (at most 10 s; the connections' callbacks stop the loop sooner),
// prints the not-ready line and returns nothing if some did not get ready;
// otherwise runs `warm` seconds unmeasured, then go() on each and `o.secs` with the
// CPU meter on. `measuring` tells the connections' callbacks which phase it is.
struct Timed {
  double secs;
  std::string cpus;
};
template <class C>
std::optional<Timed> run_timed(Loop& loop, std::vector<std::unique_ptr<C>>& conns, const Endpoint& ep,
                               const Options& o, const char* head, bool& measuring, double warm) {
  for (auto& c : conns) c->connect(ep);
  loop.run_for(10);
  int ready = 0;
  std::string why = "timeout";
  for (auto& c : conns) {
    ready += c->ready() && !c->failed();
    if (c->failed()) why = c->error();
  }
  if (ready < o.conns) {
    std::printf("%s ok=0 ready=%d error=%s\n", head, ready, why.c_str());
    return std::nullopt;
  }
  if (warm > 0) loop.run_for(warm);
  CpuMeter cpu(o.pid, o.tpid);
  cpu.start();
  double t0 = now_s();
  measuring = true;
  for (auto& c : conns) c->go();
  loop.run_for(o.secs);
  double secs = now_s() - t0;
  return Timed{secs, cpu.stop()};
}

// ------------------------------------------------------------------ ws-tput

// Sends `total` payload bytes as messages from the ring, at most `window` wire
// bytes ahead of what came back, and checks every echoed byte.
class TputConn final : public EchoConn {
 public:
  TputConn(Loop& loop, const Endpoint& ep, const Options& o, const Pattern& pat, const FrameRing& ring,
           std::function<void()> on_change)
      : EchoConn(loop.base(), ep, o), pat_(pat), ring_(ring), on_change_(std::move(on_change)), window_(o.window),
        size_(o.size) {
    uint64_t msgs = (o.bytes + o.size - 1) / o.size;
    total_payload_ = msgs * o.size;
    total_wire_ = msgs * ring.frame_size();
  }
  void go() {
    sending_ = true;
    pump();
  }
  uint64_t received() const { return rx_; }
  bool done() const { return rx_ >= total_payload_; }

 private:
  void on_ready() override { on_change_(); }
  void on_failed() override { on_change_(); }
  void on_drained() override { pump(); }

  void on_payload(const uint8_t* p, size_t n) override {
    if (rx_ + n > payload_sent()) {
      report_mismatch("more_bytes_than_sent");
      return fail("extra_bytes");
    }
    if (!pat_.check(rx_, p, n)) report_mismatch("payload_at_" + std::to_string(rx_));
    rx_ += n;
    if (done()) on_change_();
  }
  // Refill once per recv(), not per message: 1 KiB messages would otherwise make
  // one 1 KiB writev each.
  void on_read_done() override { pump(); }

  // Payload bytes among the tx_ wire bytes written: the ring is whole frames of
  // header + payload, so a frame's header bytes never count.
  uint64_t payload_sent() const {
    uint64_t frame = ring_.frame_size(), header = frame - size_, into = tx_ % frame;
    return tx_ / frame * size_ + (into > header ? into - header : 0);
  }

  void pump() {
    if (!sending_ || !open()) return;
    while (tx_ < total_wire_) {
      // The window is in payload bytes, both ways: what was sent and has not come
      // back. (Counting sent wire bytes against payload back let the headers
      // pile up as if in flight: 8 of every 1032 bytes with 1 KiB messages, so
      // a run stalled for good after 128 x (window - 64 KiB) of payload per
      // connection: 4 GB at 8 x 4 MiB.)
      uint64_t sent = payload_sent();
      uint64_t inflight = sent - std::min(sent, rx_);
      if (inflight >= window_) return;
      // Hysteresis: wait until a worthwhile piece of the window is free.
      uint64_t room = window_ - inflight;
      if (room < std::min<uint64_t>(window_ / 4, kWriteChunk / 4) && room < total_wire_ - tx_) return;
      size_t pos = static_cast<size_t>(tx_ % ring_.size());
      uint64_t want = std::min<uint64_t>({total_wire_ - tx_, window_ - inflight, kWriteChunk});
      if (!pending_control_.empty()) {
        // Control frames go between whole frames: stop at the next frame boundary.
        size_t into = pos % ring_.frame_size();
        if (into == 0) {
          std::string c = std::move(pending_control_);
          pending_control_.clear();
          ssize_t w = write_raw(reinterpret_cast<const uint8_t*>(c.data()), c.size(), nullptr, 0);
          if (w < 0) return;
          if (static_cast<size_t>(w) < c.size()) {
            // Rare: a full socket buffer mid-pong. Keep the rest first in line.
            pending_control_ = c.substr(static_cast<size_t>(w));
            return;
          }
          continue;
        }
        want = std::min<uint64_t>(want, ring_.frame_size() - into);
      }
      size_t a = static_cast<size_t>(std::min<uint64_t>(want, ring_.size() - pos));
      size_t b = static_cast<size_t>(want - a);
      ssize_t w = write_raw(ring_.data() + pos, a, ring_.data(), b);
      if (w <= 0) return;
      tx_ += static_cast<uint64_t>(w);
      if (static_cast<uint64_t>(w) < want) return;  // socket full: the write event resumes us
    }
  }

  const Pattern& pat_;
  const FrameRing& ring_;
  std::function<void()> on_change_;
  bool sending_ = false;
  uint64_t total_payload_ = 0, total_wire_ = 0;
  uint64_t tx_ = 0;  // wire bytes written
  uint64_t rx_ = 0;  // payload bytes echoed and checked
  uint64_t window_;
  uint64_t size_;  // payload bytes per message
};

int run_ws_tput(const Options& o, const Endpoint& ep) {
  if (ep.scheme == Endpoint::Scheme::Http) die(kExitUsage, "ws-tput needs a ws:// or tcp:// URL");
  Loop loop;
  Pattern pat(period_for(o.size));
  FrameRing ring(pat, o.size, ep.scheme == Endpoint::Scheme::Ws);
  std::vector<std::unique_ptr<TputConn>> conns;
  int ready = 0, failed = 0, done = 0;
  bool measuring = false;
  auto recount = [&] {
    ready = failed = done = 0;
    for (auto& c : conns) {
      ready += c->ready() && !c->failed();
      failed += c->failed();
      done += c->done();
    }
    if (!measuring && ready + failed == o.conns) loop.stop();  // all handshakes over
    if (measuring && done + failed == o.conns) loop.stop();
  };
  for (int i = 0; i < o.conns; ++i) {
    conns.push_back(std::make_unique<TputConn>(loop, ep, o, pat, ring, recount));
  }
  char head[512];
  std::snprintf(head, sizeof head, "mode=ws-tput%s url=%s conns=%d size=%" PRIu64, label_kv(o).c_str(),
                o.url.c_str(), o.conns, o.size);
  auto timed = run_timed(loop, conns, ep, o, head, measuring, 0);
  if (!timed) return kExitSetup;
  const double secs = timed->secs;
  const std::string& cpus = timed->cpus;
  recount();
  uint64_t bytes = 0;
  uint64_t pings = 0;
  std::string err;
  for (auto& c : conns) {
    bytes += c->received();
    pings += c->pings();
    if (c->failed()) err = c->error();
  }
  char line[1024];
  std::snprintf(line, sizeof line, "%s ok=%d done=%d failed=%d bytes=%" PRIu64 " secs=%.3f MBps=%.1f msgps=%.0f pings=%" PRIu64 "%s%s%s",
                head, failed ? 0 : 1, done, failed, bytes, secs, static_cast<double>(bytes) / secs / 1e6,
                static_cast<double>(bytes) / static_cast<double>(o.size) / secs, pings, cpus.c_str(),
                err.empty() ? "" : " error=", err.c_str());
  int rc = finish_line(line);
  return rc != kExitOk ? rc : (failed ? kExitSetup : kExitOk);
}

// ------------------------------------------------------------------ ws-lat

// One message in flight: send, wait for the whole echo, record, repeat.
class LatConn final : public EchoConn {
 public:
  LatConn(Loop& loop, const Endpoint& ep, const Options& o, const Pattern& pat)
      : EchoConn(loop.base(), ep, o), loop_(loop), pat_(pat), size_(o.size) {
    // Frames for a whole pattern period, built now so the loop only sends.
    for (uint64_t off = 0; off < pat.period(); off += size_)
      frames_.push_back(ws() ? client_frame(netwine::ws::Opcode::Binary, pat.at(off), size_)
                             : std::string(reinterpret_cast<const char*>(pat.at(off)), size_));
  }
  void start(double warm_until, double end_at) {
    warm_until_ = warm_until;
    end_at_ = end_at;
    fire();
  }
  std::vector<uint32_t>& samples() { return samples_; }
  uint64_t round_trips() const { return msg_; }  // warm-up included

 private:
  void on_ready() override { loop_.stop(); }
  void on_failed() override { loop_.stop(); }
  void fire() {
    if (!pending_control_.empty()) {
      std::string c = std::move(pending_control_);
      pending_control_.clear();
      send(c);
    }
    got_ = 0;
    t_sent_ = now_ns();
    send(frames_[msg_ % frames_.size()]);
  }
  void on_payload(const uint8_t* p, size_t n) override {
    if (got_ + n > size_) {
      report_mismatch("extra_bytes");
      return fail("extra_bytes");
    }
    if (!pat_.check(msg_ % frames_.size() * size_ + got_, p, n)) report_mismatch("msg_" + std::to_string(msg_));
    got_ += n;
    if (got_ < size_) return;
    uint64_t t = now_ns();
    double ts = static_cast<double>(t) * 1e-9;
    if (ts >= warm_until_) samples_.push_back(static_cast<uint32_t>(std::min<uint64_t>((t - t_sent_), UINT32_MAX)));
    ++msg_;
    if (ts >= end_at_) return loop_.stop();
    fire();
  }

  Loop& loop_;
  const Pattern& pat_;
  size_t size_;
  std::vector<std::string> frames_;
  std::vector<uint32_t> samples_;
  uint64_t msg_ = 0, t_sent_ = 0;
  size_t got_ = 0;
  double warm_until_ = 0, end_at_ = 0;
};

std::string percentiles(std::vector<uint32_t>& ns) {
  std::sort(ns.begin(), ns.end());
  auto q = [&](double p) {
    size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(ns.size()))) ;
    i = std::min(ns.size() - 1, i == 0 ? 0 : i - 1);
    return static_cast<double>(ns[i]) / 1000.0;
  };
  char b[256];
  std::snprintf(b, sizeof b, " p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f", q(0.5), q(0.9),
                q(0.99), q(0.999), static_cast<double>(ns.back()) / 1000.0);
  return b;
}

int run_ws_lat(const Options& o, const Endpoint& ep) {
  if (ep.scheme == Endpoint::Scheme::Http) die(kExitUsage, "ws-lat needs a ws:// or tcp:// URL");
  Loop loop;
  Pattern pat(o.size * 64);
  LatConn c(loop, ep, o, pat);
  char head[512];
  std::snprintf(head, sizeof head, "mode=ws-lat%s url=%s size=%" PRIu64, label_kv(o).c_str(), o.url.c_str(), o.size);
  c.connect(ep);
  loop.run_for(10);
  if (!c.ready() || c.failed()) {
    std::printf("%s ok=0 error=%s\n", head, c.failed() ? c.error().c_str() : "timeout");
    return kExitSetup;
  }
  // CPU over the warm-up and the measurement alike, with every round trip made
  // in them (rts=): the CPU per round trip, steadier than a percentile on a
  // noisy host (bench/ab.sh prints the bridge's).
  CpuMeter cpu(o.pid, o.tpid);
  cpu.start();
  double t0 = now_s();
  c.start(t0 + o.warm, t0 + o.warm + o.secs);
  loop.run_for(o.warm + o.secs + 5);
  std::string cpu_kv = cpu.stop();
  auto& s = c.samples();
  if (s.size() < 10) {
    std::printf("%s ok=0 count=%zu error=%s\n", head, s.size(), c.failed() ? c.error().c_str() : "too_few");
    return g_mismatch.empty() ? kExitSetup : kExitMismatch;
  }
  char line[1024];
  std::snprintf(line, sizeof line, "%s ok=%d count=%zu secs=%.2f rtps=%.0f%s rts=%" PRIu64 "%s", head,
                c.failed() ? 0 : 1, s.size(), o.secs, static_cast<double>(s.size()) / o.secs, percentiles(s).c_str(),
                c.round_trips(), cpu_kv.c_str());
  return finish_line(line);
}

// ------------------------------------------------------------------ ws-conns

// Opens, proves with an 8-byte echo, then stays idle.
class ProbeConn final : public EchoConn {
 public:
  ProbeConn(Loop& loop, const Endpoint& ep, const Options& o, const Pattern& pat, uint64_t off,
            std::function<void(ProbeConn*)> on_settled)
      : EchoConn(loop.base(), ep, o), pat_(pat), off_(off), on_settled_(std::move(on_settled)) {}
  bool proven() const { return proven_; }

 private:
  static constexpr size_t kProbe = 8;
  void on_ready() override {
    const uint8_t* p = pat_.at(off_);
    send(ws() ? client_frame(netwine::ws::Opcode::Binary, p, kProbe)
              : std::string(reinterpret_cast<const char*>(p), kProbe));
  }
  void on_payload(const uint8_t* p, size_t n) override {
    if (got_ + n > kProbe) {
      report_mismatch("extra_bytes");
      return fail("extra_bytes");
    }
    if (!pat_.check(off_ + got_, p, n)) report_mismatch("probe");
    got_ += n;
    if (!pending_control_.empty()) {
      std::string c = std::move(pending_control_);
      pending_control_.clear();
      send(c);
    }
    if (got_ == kProbe && !proven_) {
      proven_ = true;
      settle();
    }
  }
  void on_failed() override { settle(); }
  void settle() {
    if (settled_) return;
    settled_ = true;
    on_settled_(this);
  }

  const Pattern& pat_;
  uint64_t off_;
  std::function<void(ProbeConn*)> on_settled_;
  size_t got_ = 0;
  bool proven_ = false, settled_ = false;
};

// Opens `k` things at most `par` at a time; `make(i)` starts the i-th. Shared by
// ws-conns and poll-idle.
struct Opener {
  Opener(int k_, int par_, Loop& l) : k(k_), par(par_), loop(&l) {}
  int k, par, started = 0, settled = 0, ok = 0;
  std::function<void(int)> make;
  Loop* loop;
  void kick() {
    while (started < k && started - settled < par) make(started++);
    if (settled == k) loop->stop();
  }
  void settle(bool good) {
    ++settled;
    ok += good;
    kick();
  }
};

std::string memory_kv(const ProcStat& a, const ProcStat& b, int ok) {
  if (!a.ok || !b.ok || ok == 0) return "";
  char s[512];
  double n = ok;
  std::snprintf(s, sizeof s,
                " procs0=%d procs1=%d rss0_kb=%ld rss1_kb=%ld kb_per_conn=%.2f tree_rss_kb_per_conn=%.1f "
                "tree_pss_kb_per_conn=%.1f",
                a.nprocs, b.nprocs, a.main_rss_kb, b.main_rss_kb,
                static_cast<double>(b.main_rss_kb - a.main_rss_kb) / n,
                static_cast<double>(b.tree_rss_kb - a.tree_rss_kb) / n,
                static_cast<double>(b.tree_pss_kb - a.tree_pss_kb) / n);
  return s;
}

int run_ws_conns(const Options& o, const Endpoint& ep) {
  if (ep.scheme == Endpoint::Scheme::Http) die(kExitUsage, "ws-conns needs a ws:// or tcp:// URL");
  Loop loop;
  Pattern pat(4096);
  std::vector<std::unique_ptr<ProbeConn>> conns;
  Opener op(o.k, o.par, loop);
  std::string last_error;
  op.make = [&](int i) {
    conns.push_back(std::make_unique<ProbeConn>(loop, ep, o, pat, static_cast<uint64_t>(i) * 8, [&](ProbeConn* c) {
      if (c->failed()) last_error = c->error();
      op.settle(c->proven() && !c->failed());
    }));
    conns.back()->connect(ep);
  };
  ProcStat before = read_proc_tree(o.pid);
  double t0 = now_s();
  op.kick();
  loop.run_for(o.secs);
  double open_s = now_s() - t0;
  loop.run_for(0.2);  // let the server settle (fork-per-connection bridges too)
  ProcStat after = read_proc_tree(o.pid);
  int alive = 0;
  for (auto& c : conns) alive += c->proven() && !c->failed();
  if (o.hold > 0) loop.run_for(o.hold);
  char line[1024];
  std::snprintf(line, sizeof line, "mode=ws-conns%s url=%s k=%d par=%d ok=%d opened=%d failed=%d alive=%d open_s=%.3f connps=%.0f%s%s%s",
                label_kv(o).c_str(), o.url.c_str(), o.k, o.par, op.ok == o.k ? 1 : 0, op.ok, op.settled - op.ok, alive,
                open_s, static_cast<double>(op.ok) / open_s, memory_kv(before, after, op.ok).c_str(),
                last_error.empty() ? "" : " error=", last_error.c_str());
  conns.clear();
  int rc = finish_line(line);
  return rc != kExitOk ? rc : (op.ok == o.k ? kExitOk : kExitSetup);
}

// ------------------------------------------------------------------ HTTP clients

// A keep-alive HTTP/1.1 client connection issuing one request at a time.
class HttpConn : public Conn, private ResponseParser::Sink {
 public:
  HttpConn(event_base* base, const Endpoint& ep) : Conn(base), ep_(ep) {}
  bool busy() const { return busy_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

  // Reconnects if needed. `body` is borrowed and must live until the response.
  void request(std::string_view method, const std::string& path_and_query, const uint8_t* body = nullptr,
               size_t len = 0) {
    busy_ = true;
    req_.clear();
    req_.append(method).append(" ").append(ep_.path).append(path_and_query);
    req_ += " HTTP/1.1\r\nHost: " + ep_.host_header + "\r\nContent-Length: " + std::to_string(len) + "\r\n\r\n";
    body_ = body;
    body_len_ = len;
    if (!open() || must_reconnect_) {
      must_reconnect_ = false;
      shutdown();
      connected_ = false;
      connect(ep_);
      return;
    }
    if (connected_) send(req_, body_, body_len_);
  }

 protected:
  virtual void on_response_head(int status, const ResponseParser::Head& h) = 0;
  virtual void on_response_body(const uint8_t* p, size_t n) = 0;
  virtual void on_response_end() = 0;
  virtual void on_http_failed() = 0;
  void fail(const std::string& why) {
    if (error_.empty()) error_ = why;
    shutdown();
    on_http_failed();
  }

 private:
  void on_connected() override {
    connected_ = true;
    if (busy_) send(req_, body_, body_len_);
  }
  void on_bytes(uint8_t* p, size_t n) override {
    if (parser_.feed(p, n, *this) < 0) fail("bad_http_response");
  }
  void on_gone(const std::string& what) override {
    must_reconnect_ = true;  // the next request opens a new connection
    if (!busy_) return;      // an idle keep-alive connection closed by the server
    parser_.eof(*this);      // ends a close-delimited body (calls on_end)
    if (!busy_) return;
    parser_ = ResponseParser();
    if (error_.empty()) error_ = what;
    on_http_failed();
  }
  void on_head(const ResponseParser::Head& h) override { on_response_head(h.status, h); }
  void on_body(const uint8_t* p, size_t n) override { on_response_body(p, n); }
  void on_end() override {
    busy_ = false;
    if (parser_.wants_close()) must_reconnect_ = true;
    on_response_end();
  }

  const Endpoint& ep_;
  ResponseParser parser_;
  std::string req_, error_;
  const uint8_t* body_ = nullptr;
  size_t body_len_ = 0;
  bool busy_ = false, connected_ = false, must_reconnect_ = false;
};

// Reads the "OK <next>\n" answer of a send; calls back with the status and next offset.
class SendConn final : public HttpConn {
 public:
  SendConn(event_base* base, const Endpoint& ep, std::function<void(int, uint64_t)> done,
           std::function<void()> failed)
      : HttpConn(base, ep), done_(std::move(done)), failed_(std::move(failed)) {}

 private:
  void on_response_head(int status, const ResponseParser::Head&) override {
    status_ = status;
    body_.clear();
  }
  void on_response_body(const uint8_t* p, size_t n) override {
    if (body_.size() < 4096) body_.append(reinterpret_cast<const char*>(p), n);
  }
  void on_response_end() override {
    uint64_t next = 0;
    if (status_ == 200 && body_.starts_with("OK ")) std::from_chars(body_.data() + 3, body_.data() + body_.size(), next);
    if (status_ != 200) std::fprintf(stderr, "nwbench: send answered %d: %s\n", status_, body_.c_str());
    done_(status_, next);
  }
  void on_http_failed() override { failed_(); }
  std::function<void(int, uint64_t)> done_;
  std::function<void()> failed_;
  int status_ = 0;
  std::string body_;
};

// A response whose body is tunnel frames (open, stream, poll): frames go to `sink`.
class FramesConn final : public HttpConn {
 public:
  FramesConn(event_base* base, const Endpoint& ep, TunnelReader::Sink& sink, std::function<void(int)> on_end,
             std::function<void()> failed)
      : HttpConn(base, ep), sink_(sink), end_(std::move(on_end)), failed_(std::move(failed)) {}

 private:
  void on_response_head(int status, const ResponseParser::Head&) override {
    status_ = status;
    reader_.reset();
    if (status != 200) std::fprintf(stderr, "nwbench: HTTP %d\n", status);
  }
  void on_response_body(const uint8_t* p, size_t n) override {
    if (status_ == 200 && !reader_.feed(p, n, sink_)) fail("bad_frame");
  }
  void on_response_end() override { end_(status_); }
  void on_http_failed() override { failed_(); }
  TunnelReader::Sink& sink_;
  TunnelReader reader_;
  std::function<void(int)> end_;
  std::function<void()> failed_;
  int status_ = 0;
};

// Checks downstream data against the pattern, skipping bytes already held
// (frames may repeat bytes after a re-attach, PROTOCOL.md §1).
struct DownChecker {
  const Pattern* pat = nullptr;
  uint64_t base = 0;     // pattern offset of stream byte 0
  uint64_t rx = 0;       // next downstream offset expected
  uint64_t sent = 0;     // upstream bytes sent: nothing past it may come back
  bool accept(uint64_t off, const uint8_t* p, size_t n) {
    if (off > rx) {
      report_mismatch("gap_at_" + std::to_string(rx));
      return false;
    }
    if (off + n <= rx) return true;
    size_t skip = static_cast<size_t>(rx - off);
    p += skip, n -= skip;
    if (rx + n > sent) {
      report_mismatch("more_bytes_than_sent");
      return false;
    }
    if (!pat->check(base + rx, p, n)) report_mismatch("payload_at_" + std::to_string(rx));
    rx += n;
    return true;
  }
};

std::string target_query(const Options& o) { return "target=" + o.target; }

void check_target(const Options& o) {
  std::string host;
  int port = 0;
  sockaddr_storage ss;
  socklen_t len;
  if (o.target.empty()) die(kExitUsage, "--target HOST:PORT is required for this mode");
  if (!split_host_port(o.target, host, port) || !resolve_loopback(host, port, ss, len))
    die(kExitUsage, "--target must be a loopback HOST:PORT: " + o.target);
}

// ------------------------------------------------------------------ stream-tput

// One session: the open request's response is the stream (binary framing); the
// upload is POST send with offsets, one at a time, carrying the ack.
class StreamSession final : private TunnelReader::Sink {
 public:
  StreamSession(Loop& loop, const Endpoint& ep, const Options& o, const Pattern& pat, std::function<void()> changed)
      : o_(o), pat_(pat), changed_(std::move(changed)),
        stream_(loop.base(), ep, *this, [this](int st) { on_stream_end(st); }, [this] { fail("stream:" + stream_.error()); }),
        up_(loop.base(), ep, [this](int st, uint64_t next) { on_sent(st, next); }, [this] { fail("send:" + up_.error()); }) {
    check_.pat = &pat;
    total_ = o.bytes;
  }
  void start() { stream_.request("POST", "open?" + target_query(o_) + "&mode=stream&framing=binary"); }
  void go() {
    going_ = true;
    pump();
  }
  void close_session() {
    closing_ = true;
    if (!key_.empty() && !up_.busy()) up_.request("POST", key_ + "/close");
  }
  bool ready() const { return !key_.empty(); }
  bool failed() const { return !error_.empty(); }
  bool done() const { return check_.rx >= total_; }
  uint64_t received() const { return check_.rx; }
  const std::string& error() const { return error_; }
  uint64_t recycles() const { return recycles_; }
  uint64_t sends() const { return sends_; }

 private:
  void fail(const std::string& why) {
    if (error_.empty()) error_ = why;
    changed_();
  }
  // TunnelReader::Sink
  void on_ok(std::string_view key) override {
    key_ = key;
    changed_();
  }
  void on_data(uint64_t off, const uint8_t* p, size_t n) override {
    if (!check_.accept(off, p, n)) return fail("verify");
    if (done()) changed_();
    pump();
  }
  void on_recycle() override { ++recycles_; }
  void on_close(int code, std::string_view reason) override {
    closed_ = true;
    if (!done() && !closing_) fail("closed_" + std::to_string(code) + ":" + std::string(reason));
  }

  void on_stream_end(int status) {
    if (closing_) return;
    if (status != 200) return fail("stream_http" + std::to_string(status));
    if (closed_ || failed()) return;
    // Recycled (or taken over): re-attach with what we hold.
    stream_.request("GET", key_ + "/stream?framing=binary&ack=" + std::to_string(check_.rx));
  }

  void on_sent(int status, uint64_t next) {
    if (closing_) return;  // the close request's answer after the run
    if (status != 200) return fail("send_http" + std::to_string(status));
    if (next != check_.sent) return fail("send_next_" + std::to_string(next) + "_expected_" + std::to_string(check_.sent));
    pump();
  }

  void pump() {
    if (!going_ || up_.busy() || failed() || key_.empty()) return;
    uint64_t inflight = check_.sent - check_.rx;
    uint64_t left = total_ > check_.sent ? total_ - check_.sent : 0;
    uint64_t n = std::min<uint64_t>({o_.size, left, o_.window > inflight ? o_.window - inflight : 0});
    bool ack_due = check_.rx - acked_ >= kAckEvery;
    if (n == 0 && !ack_due) return;
    std::string q = key_ + "/send?off=" + std::to_string(check_.sent) + "&ack=" + std::to_string(check_.rx);
    acked_ = check_.rx;
    const uint8_t* body = pat_.at(check_.sent);
    check_.sent += n;
    ++sends_;
    up_.request("POST", q, body, static_cast<size_t>(n));
  }

  const Options& o_;
  const Pattern& pat_;
  std::function<void()> changed_;
  FramesConn stream_;
  SendConn up_;
  DownChecker check_;
  std::string key_, error_;
  uint64_t total_ = 0, acked_ = 0, recycles_ = 0, sends_ = 0;
  bool going_ = false, closed_ = false, closing_ = false;
};

int run_stream_tput(const Options& o, const Endpoint& ep) {
  if (ep.scheme != Endpoint::Scheme::Http) die(kExitUsage, "stream-tput needs an http:// URL");
  check_target(o);
  Loop loop;
  Pattern pat(period_for(o.size));
  std::vector<std::unique_ptr<StreamSession>> ss;
  bool measuring = false;
  auto changed = [&] {
    int ready = 0, failed = 0, done = 0;
    for (auto& s : ss) ready += s->ready(), failed += s->failed(), done += s->done();
    if (!measuring && ready + failed == o.conns) loop.stop();
    if (measuring && done + failed == o.conns) loop.stop();
  };
  for (int i = 0; i < o.conns; ++i) ss.push_back(std::make_unique<StreamSession>(loop, ep, o, pat, changed));
  for (auto& s : ss) s->start();
  loop.run_for(10);
  char head[512];
  std::snprintf(head, sizeof head, "mode=stream-tput%s url=%s sessions=%d send_size=%" PRIu64 " window=%" PRIu64,
                label_kv(o).c_str(), o.url.c_str(), o.conns, o.size, o.window);
  for (auto& s : ss)
    if (!s->ready()) {
      std::printf("%s ok=0 error=%s\n", head, s->failed() ? s->error().c_str() : "open_timeout");
      return kExitSetup;
    }
  CpuMeter cpu(o.pid, o.tpid);
  cpu.start();
  double t0 = now_s();
  measuring = true;
  for (auto& s : ss) s->go();
  loop.run_for(o.secs);
  double secs = now_s() - t0;
  std::string cpus = cpu.stop();
  uint64_t bytes = 0, recycles = 0, sends = 0;
  int failed = 0;
  std::string err;
  for (auto& s : ss) {
    bytes += s->received(), recycles += s->recycles(), sends += s->sends();
    if (s->failed()) ++failed, err = s->error();
  }
  for (auto& s : ss) s->close_session();
  loop.run_for(0.2);
  char line[1024];
  std::snprintf(line, sizeof line, "%s ok=%d failed=%d bytes=%" PRIu64 " secs=%.3f MBps=%.1f sends=%" PRIu64 " recycles=%" PRIu64 "%s%s%s",
                head, failed ? 0 : 1, failed, bytes, secs, static_cast<double>(bytes) / secs / 1e6, sends, recycles,
                cpus.c_str(), err.empty() ? "" : " error=", err.c_str());
  int rc = finish_line(line);
  return rc != kExitOk ? rc : (failed ? kExitSetup : kExitOk);
}

// ------------------------------------------------------------------ poll sessions

// A long-polling session. `echo_rounds` mode (poll-rtt): a poll is always
// outstanding on one connection, sends go on another; a round trip is a send of
// `size` bytes until all of them came back. Idle mode (poll-idle): one connection,
// open, send 8 bytes, poll them back, then hold a poll open.
class PollSession final : private TunnelReader::Sink {
 public:
  PollSession(Loop& loop, const Endpoint& ep, const Options& o, const Pattern& pat, uint64_t pat_off, bool idle,
              std::function<void(PollSession*)> settled)
      : o_(o), pat_(pat), idle_(idle), settled_(std::move(settled)),
        poll_(loop.base(), ep, *this, [this](int st) { on_poll_end(st); }, [this] { fail("poll:" + poll_.error()); }),
        up_(loop.base(), ep, [this](int st, uint64_t next) { on_sent(st, next); }, [this] { fail("send:" + up_.error()); }) {
    check_.pat = &pat;
    check_.base = pat_off;
    size_ = idle ? 8 : o.size;
  }
  void start() { poll_.request("POST", "open?" + target_query(o_) + "&mode=poll"); }
  void go(double warm_until) {
    warm_until_ = warm_until;
    going_ = true;
    next_round();
  }
  void stop() { going_ = false; }
  bool ready() const { return !key_.empty(); }
  bool proven() const { return proven_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  std::vector<uint32_t>& samples() { return samples_; }
  uint64_t rounds() const { return rounds_; }
  void close_session() {
    closing_ = true;
    if (!key_.empty() && !up_.busy()) up_.request("POST", key_ + "/close");
  }

 private:
  void fail(const std::string& why) {
    if (error_.empty()) error_ = why;
    settle();
  }
  void settle() {
    if (settled_flag_) return;
    settled_flag_ = true;
    settled_(this);
  }
  void on_ok(std::string_view key) override { key_ = key; }
  void on_data(uint64_t off, const uint8_t* p, size_t n) override {
    if (!check_.accept(off, p, n)) fail("verify");
  }
  void on_recycle() override {}
  void on_close(int code, std::string_view) override {
    if (!closing_) fail("closed_" + std::to_string(code));
  }

  void on_poll_end(int status) {
    if (closing_) return;
    if (status != 200) return fail("http" + std::to_string(status));
    if (failed()) return;
    if (idle_) {
      if (!opened_) {  // the open answer: go on with the probe send
        opened_ = true;
        if (key_.empty()) return fail("no_key");
        send_round();
        return;
      }
      if (check_.rx == check_.sent && !proven_) {
        proven_ = true;
        settle();
      }
      poll_.request("GET", key_ + "/poll?framing=binary&ack=" + std::to_string(check_.rx));
      return;
    }
    if (!opened_) {
      opened_ = true;
      if (key_.empty()) return fail("no_key");
      settle();  // ready; go() starts the rounds
      return;
    }
    round_progress();  // may start the next round, which polls again
    if (going_ && !poll_.busy()) poll_.request("GET", key_ + "/poll?framing=binary&ack=" + std::to_string(check_.rx));
  }

  void on_sent(int status, uint64_t next) {
    if (closing_) return;
    if (status != 200) return fail("send_http" + std::to_string(status));
    if (next != check_.sent) return fail("send_next");
    if (idle_) {
      // Probe sent: poll it back (the poll conn is idle, the open answered).
      poll_.request("GET", key_ + "/poll?framing=binary&ack=0");
      return;
    }
    sent_ok_ = true;
    round_progress();
  }

  void send_round() {
    const uint8_t* p = pat_.at(check_.base + check_.sent);
    std::string q = key_ + "/send?off=" + std::to_string(check_.sent) + "&ack=" + std::to_string(check_.rx);
    check_.sent += size_;
    sent_ok_ = false;
    t_round_ = now_ns();
    up_.request("POST", q, p, size_);
  }

  // A round is over when its bytes came back and its send was answered.
  void round_progress() {
    if (!going_ || !sent_ok_ || check_.rx < check_.sent) return;
    uint64_t t = now_ns();
    if (static_cast<double>(t) * 1e-9 >= warm_until_) {
      samples_.push_back(static_cast<uint32_t>(std::min<uint64_t>(t - t_round_, UINT32_MAX)));
      ++rounds_;
    }
    next_round();
  }
  void next_round() {
    if (!going_) return;
    send_round();
    if (!poll_.busy()) poll_.request("GET", key_ + "/poll?framing=binary&ack=" + std::to_string(check_.rx));
  }

  const Options& o_;
  const Pattern& pat_;
  bool idle_;
  std::function<void(PollSession*)> settled_;
  FramesConn poll_;
  SendConn up_;
  DownChecker check_;
  std::string key_, error_;
  size_t size_;
  bool opened_ = false, proven_ = false, going_ = false, sent_ok_ = false, settled_flag_ = false;
  bool closing_ = false;  // the close request went out: later answers are not errors
  uint64_t t_round_ = 0, rounds_ = 0;
  double warm_until_ = 0;
  std::vector<uint32_t> samples_;
};

int run_poll_rtt(const Options& o, const Endpoint& ep) {
  if (ep.scheme != Endpoint::Scheme::Http) die(kExitUsage, "poll-rtt needs an http:// URL");
  check_target(o);
  Loop loop;
  Pattern pat(1 << 20);
  std::vector<std::unique_ptr<PollSession>> ss;
  int settled = 0;
  for (int i = 0; i < o.conns; ++i)
    ss.push_back(std::make_unique<PollSession>(loop, ep, o, pat, static_cast<uint64_t>(i) * 4099, false,
                                               [&](PollSession*) {
                                                 if (++settled == o.conns) loop.stop();
                                               }));
  for (auto& s : ss) s->start();
  loop.run_for(10);
  char head[512];
  std::snprintf(head, sizeof head, "mode=poll-rtt%s url=%s sessions=%d size=%" PRIu64, label_kv(o).c_str(),
                o.url.c_str(), o.conns, o.size);
  for (auto& s : ss)
    if (!s->ready() || s->failed()) {
      std::printf("%s ok=0 error=%s\n", head, s->failed() ? s->error().c_str() : "open_timeout");
      return kExitSetup;
    }
  CpuMeter cpu(o.pid, o.tpid);
  double t0 = now_s();
  for (auto& s : ss) s->go(t0 + o.warm);
  loop.run_for(o.warm);
  cpu.start();
  loop.run_for(o.secs);
  std::string cpus = cpu.stop();
  for (auto& s : ss) s->stop();
  std::vector<uint32_t> all;
  uint64_t rounds = 0;
  int failed = 0;
  std::string err;
  for (auto& s : ss) {
    all.insert(all.end(), s->samples().begin(), s->samples().end());
    rounds += s->rounds();
    if (s->failed()) ++failed, err = s->error();
  }
  loop.run_for(0.1);
  for (auto& s : ss) s->close_session();
  loop.run_for(0.2);
  if (all.size() < 10) {
    std::printf("%s ok=0 rounds=%" PRIu64 " error=%s\n", head, rounds, err.empty() ? "too_few" : err.c_str());
    return g_mismatch.empty() ? kExitSetup : kExitMismatch;
  }
  char line[1024];
  std::snprintf(line, sizeof line, "%s ok=%d failed=%d rounds=%" PRIu64 " secs=%.2f rtps=%.0f%s%s%s%s", head,
                failed ? 0 : 1, failed, rounds, o.secs, static_cast<double>(rounds) / o.secs,
                percentiles(all).c_str(), cpus.c_str(), err.empty() ? "" : " error=", err.c_str());
  int rc = finish_line(line);
  return rc != kExitOk ? rc : (failed ? kExitSetup : kExitOk);
}

int run_poll_idle(const Options& o, const Endpoint& ep) {
  if (ep.scheme != Endpoint::Scheme::Http) die(kExitUsage, "poll-idle needs an http:// URL");
  check_target(o);
  Loop loop;
  Pattern pat(1 << 16);
  std::vector<std::unique_ptr<PollSession>> ss;
  Opener op(o.k, o.par, loop);
  std::string last_error;
  op.make = [&](int i) {
    ss.push_back(std::make_unique<PollSession>(loop, ep, o, pat, static_cast<uint64_t>(i) * 8, true,
                                               [&](PollSession* s) {
                                                 if (s->failed()) last_error = s->error();
                                                 op.settle(s->proven() && !s->failed());
                                               }));
    ss.back()->start();
  };
  ProcStat before = read_proc_tree(o.pid);
  double t0 = now_s();
  op.kick();
  loop.run_for(o.secs);
  double open_s = now_s() - t0;
  loop.run_for(0.2);
  ProcStat after = read_proc_tree(o.pid);
  if (o.hold > 0) loop.run_for(o.hold);
  int alive = 0;
  for (auto& s : ss) alive += s->proven() && !s->failed();
  char line[1024];
  std::snprintf(line, sizeof line, "mode=poll-idle%s url=%s k=%d par=%d ok=%d opened=%d failed=%d alive=%d open_s=%.3f sessps=%.0f%s%s%s",
                label_kv(o).c_str(), o.url.c_str(), o.k, o.par, op.ok == o.k ? 1 : 0, op.ok, op.settled - op.ok, alive,
                open_s, static_cast<double>(op.ok) / open_s, memory_kv(before, after, op.ok).c_str(),
                last_error.empty() ? "" : " error=", last_error.c_str());
  for (auto& s : ss) s->close_session();
  loop.run_for(0.3);
  ss.clear();
  int rc = finish_line(line);
  return rc != kExitOk ? rc : (op.ok == o.k ? kExitOk : kExitSetup);
}

// ------------------------------------------------------------------ serve: the targets

// The source target's stream: byte k is k mod 251 (a prime, so it never lines up
// with message or buffer sizes), cheap to check anywhere in the stream.
constexpr size_t kSourcePeriod = 251;
uint8_t source_byte(uint64_t k) { return static_cast<uint8_t>(k % kSourcePeriod); }

// The source stream from offset 0 for kWriteChunk + one period: any offset's next
// kWriteChunk bytes start at ring[offset % period].
const std::vector<uint8_t>& source_ring() {
  static const std::vector<uint8_t> ring = [] {
    std::vector<uint8_t> r(kWriteChunk + kSourcePeriod);
    for (size_t i = 0; i < r.size(); ++i) r[i] = source_byte(i);
    return r;
  }();
  return ring;
}

bool source_check(uint64_t off, const uint8_t* p, size_t n) {
  const auto& ring = source_ring();
  while (n) {
    size_t k = std::min(n, kWriteChunk);
    if (std::memcmp(ring.data() + off % kSourcePeriod, p, k) != 0) return false;
    off += k, p += k, n -= k;
  }
  return true;
}

// One accepted connection of `nwbench serve`. echo: what is read is written back,
// reading stops while a write is unfinished (back-pressure, no unbounded buffer);
// sink: read and drop; source: write the source stream as fast as it is taken and
// drop whatever arrives. Reads and writes are up to 256 KiB / 1 MiB per call.
class ServeConn {
 public:
  ServeConn(event_base* base, evutil_socket_t fd, char kind, std::function<void(ServeConn*)> on_close)
      : fd_(fd), kind_(kind), on_close_(std::move(on_close)) {
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    rev_.reset(event_new(base, fd_, EV_READ | EV_PERSIST, &ServeConn::on_read_cb, this));
    wev_.reset(event_new(base, fd_, EV_WRITE | EV_PERSIST, &ServeConn::on_write_cb, this));
    event_add(rev_.get(), nullptr);
    if (kind_ == 's') event_add(wev_.get(), nullptr);
  }
  ~ServeConn() { ::close(fd_); }
  ServeConn(const ServeConn&) = delete;
  ServeConn& operator=(const ServeConn&) = delete;

 private:
  static void on_read_cb(evutil_socket_t, short, void* self) { static_cast<ServeConn*>(self)->do_read(); }
  static void on_write_cb(evutil_socket_t, short, void* self) { static_cast<ServeConn*>(self)->do_write(); }

  void do_read() {
    ssize_t n = ::recv(fd_, g_rx, sizeof g_rx, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return close();
    if (n < 0 || kind_ != 'e') return;  // sink and source drop what arrives
    // Write back at once from the read buffer; only what the socket does not take
    // is copied aside, and reading stops until it has gone.
    ssize_t w = ::send(fd_, g_rx, static_cast<size_t>(n), MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return close();
    if (w < 0) w = 0;
    if (w == n) return;
    pending_.assign(g_rx + w, g_rx + n);
    pos_ = 0;
    do_write();
  }

  void do_write() {
    if (kind_ == 's') return write_source();
    while (pos_ < pending_.size()) {
      ssize_t w = ::send(fd_, pending_.data() + pos_, pending_.size() - pos_, MSG_NOSIGNAL);
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
      if (w <= 0) return close();
      pos_ += static_cast<size_t>(w);
    }
    if (pos_ < pending_.size()) {  // the peer is slow: stop reading until it takes this
      event_del(rev_.get());
      event_add(wev_.get(), nullptr);
    } else {
      event_del(wev_.get());
      event_add(rev_.get(), nullptr);
    }
  }

  void write_source() {
    const auto& ring = source_ring();
    size_t at = static_cast<size_t>(sent_ % kSourcePeriod);
    ssize_t w = ::send(fd_, ring.data() + at, kWriteChunk, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (w <= 0) return close();
    sent_ += static_cast<uint64_t>(w);
  }

  void close() {
    event_del(rev_.get());
    event_del(wev_.get());
    on_close_(this);  // frees *this
  }

  evutil_socket_t fd_;
  char kind_;
  std::function<void(ServeConn*)> on_close_;
  EventPtr rev_, wev_;
  std::vector<uint8_t> pending_;
  size_t pos_ = 0;
  uint64_t sent_ = 0;
};

int run_serve(const Options& o, const Endpoint& ep) {
  if (ep.scheme != Endpoint::Scheme::Tcp || ep.tls) die(kExitUsage, "serve needs a tcp://127.0.0.1:PORT URL");
  char kind = o.kind == "echo" ? 'e' : o.kind == "sink" ? 'k' : o.kind == "source" ? 's' : 0;
  if (!kind) die(kExitUsage, "serve needs --kind echo, sink or source");
  int ls = ::socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ls < 0 || ::bind(ls, reinterpret_cast<const sockaddr*>(&ep.addr), ep.addr_len) != 0 || ::listen(ls, 4096) != 0)
    die(kExitSetup, std::string("serve: cannot listen: ") + std::strerror(errno));
  Loop loop;
  std::map<ServeConn*, std::unique_ptr<ServeConn>> conns;
  std::vector<std::unique_ptr<ServeConn>> dead;
  // Closed connections are freed after the callback that closed them.
  EventPtr reaper(evtimer_new(loop.base(), [](evutil_socket_t, short, void* d) {
    static_cast<std::vector<std::unique_ptr<ServeConn>>*>(d)->clear();
  }, &dead));
  struct Acceptor {
    int ls;
    char kind;
    event_base* base;
    std::map<ServeConn*, std::unique_ptr<ServeConn>>* conns;
    std::vector<std::unique_ptr<ServeConn>>* dead;
    event* reaper;
  } acc{ls, kind, loop.base(), &conns, &dead, reaper.get()};
  EventPtr accept_ev(event_new(loop.base(), ls, EV_READ | EV_PERSIST, [](evutil_socket_t, short, void* a) {
    auto* A = static_cast<Acceptor*>(a);
    for (int i = 0; i < 64; ++i) {
      int fd = ::accept4(A->ls, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or EMFILE: try again on the next event
      auto c = std::make_unique<ServeConn>(A->base, fd, A->kind, [A](ServeConn* gone) {
        auto it = A->conns->find(gone);
        if (it == A->conns->end()) return;
        A->dead->push_back(std::move(it->second));
        A->conns->erase(it);
        timeval zero{0, 0};
        evtimer_add(A->reaper, &zero);
      });
      ServeConn* raw = c.get();
      (*A->conns)[raw] = std::move(c);
    }
  }, &acc));
  event_add(accept_ev.get(), nullptr);
  std::fprintf(stderr, "nwbench serve: %s on %s\n", o.kind.c_str(), o.url.c_str());
  event_base_dispatch(loop.base());
  return kExitOk;
}

// ------------------------------------------------------------------ ws-up, ws-down

// One direction only: `up` writes messages from the ring for the whole run (to a
// sink: nothing comes back); `down` reads the source stream and checks every byte.
class DirConn final : public EchoConn {
 public:
  DirConn(Loop& loop, const Endpoint& ep, const Options& o, const FrameRing* ring, std::function<void()> on_change)
      : EchoConn(loop.base(), ep, o), ring_(ring), on_change_(std::move(on_change)), msg_(o.size) {}
  void go() {
    going_ = true;
    rx_at_go_ = rx_;
    pump();
  }
  // Payload bytes moved since go(): written (up) or read and checked (down).
  uint64_t moved() const {
    if (!ring_) return rx_ - rx_at_go_;
    return tx_ / ring_->frame_size() * msg_ + std::min<uint64_t>(tx_ % ring_->frame_size(), msg_);
  }

 private:
  void on_ready() override { on_change_(); }
  void on_failed() override { on_change_(); }
  void on_drained() override { pump(); }
  void on_payload(const uint8_t* p, size_t n) override {
    if (ring_) {
      report_mismatch("bytes_from_a_sink");
      return fail("unexpected_bytes");
    }
    if (!source_check(rx_, p, n)) report_mismatch("source_near_" + std::to_string(rx_));
    rx_ += n;
  }
  void on_read_done() override {
    if (!pending_control_.empty()) {  // a pong: a tiny write between reads
      std::string c = std::move(pending_control_);
      pending_control_.clear();
      write_raw(reinterpret_cast<const uint8_t*>(c.data()), c.size(), nullptr, 0);
    }
  }

  void pump() {
    if (!going_ || !ring_ || !open()) return;
    // A fast sink could keep this loop going past the run's deadline: after
    // kPumpBudget, continue from the next write event.
    for (uint64_t start = tx_; tx_ - start < kPumpBudget;) {
      size_t pos = static_cast<size_t>(tx_ % ring_->size());
      size_t want = kWriteChunk;
      if (!pending_control_.empty()) {
        size_t into = pos % ring_->frame_size();
        if (into == 0) {
          std::string c = std::move(pending_control_);
          pending_control_.clear();
          if (write_raw(reinterpret_cast<const uint8_t*>(c.data()), c.size(), nullptr, 0) < 0) return;
          continue;  // (a partly written pong is rare; the frame stays whole either way)
        }
        want = std::min(want, ring_->frame_size() - into);
      }
      size_t a = std::min(want, ring_->size() - pos);
      ssize_t w = write_raw(ring_->data() + pos, a, ring_->data(), want - a);
      if (w <= 0) return;
      tx_ += static_cast<uint64_t>(w);
      if (static_cast<size_t>(w) < want) return;  // socket full: the write event resumes us
    }
    want_write();
  }

  static constexpr uint64_t kPumpBudget = 8 * kWriteChunk;
  const FrameRing* ring_;  // null: down
  std::function<void()> on_change_;
  size_t msg_;
  bool going_ = false;
  uint64_t tx_ = 0, rx_ = 0, rx_at_go_ = 0;
};

int run_dir(const Options& o, const Endpoint& ep, bool up) {
  const char* mode = up ? "ws-up" : "ws-down";
  if (ep.scheme == Endpoint::Scheme::Http) die(kExitUsage, std::string(mode) + " needs a ws:// or tcp:// URL");
  Loop loop;
  Pattern pat(period_for(o.size));
  std::optional<FrameRing> ring;
  if (up) ring.emplace(pat, o.size, ep.scheme == Endpoint::Scheme::Ws);
  std::vector<std::unique_ptr<DirConn>> conns;
  bool measuring = false;
  int ready = 0, failed = 0;
  auto recount = [&] {
    ready = failed = 0;
    for (auto& c : conns) {
      ready += c->ready() && !c->failed();
      failed += c->failed();
    }
    if (!measuring && ready + failed == o.conns) loop.stop();
  };
  for (int i = 0; i < o.conns; ++i)
    conns.push_back(std::make_unique<DirConn>(loop, ep, o, ring ? &*ring : nullptr, recount));
  char head[512];
  std::snprintf(head, sizeof head, "mode=%s%s url=%s conns=%d size=%" PRIu64, mode, label_kv(o).c_str(),
                o.url.c_str(), o.conns, up ? o.size : 0);
  // down: let the pipeline fill before the clock starts, so that its buffers are
  // not counted as throughput.
  auto timed = run_timed(loop, conns, ep, o, head, measuring, up ? 0 : o.warm);
  if (!timed) return kExitSetup;
  const double secs = timed->secs;
  const std::string& cpus = timed->cpus;
  recount();
  uint64_t bytes = 0;
  std::string err;
  for (auto& c : conns) {
    bytes += c->moved();
    if (c->failed()) err = c->error();
  }
  char line[1024];
  std::snprintf(line, sizeof line, "%s ok=%d failed=%d bytes=%" PRIu64 " secs=%.3f MBps=%.1f%s%s%s", head,
                failed ? 0 : 1, failed, bytes, secs, static_cast<double>(bytes) / secs / 1e6, cpus.c_str(),
                err.empty() ? "" : " error=", err.c_str());
  int rc = finish_line(line);
  return rc != kExitOk ? rc : (failed ? kExitSetup : kExitOk);
}

int run_ws_up(const Options& o, const Endpoint& ep) { return run_dir(o, ep, true); }
int run_ws_down(const Options& o, const Endpoint& ep) { return run_dir(o, ep, false); }

}  // namespace
}  // namespace nwbench

int main(int argc, char** argv) {
  using namespace nwbench;
  Options o = parse_options(argc, argv);
  Endpoint ep = parse_url(o.url);
  std::signal(SIGPIPE, SIG_IGN);
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  g_rng ^= static_cast<uint64_t>(getpid()) * 0x2545F4914F6CDD1Dull ^ now_ns();
  struct Defaults {
    const char* mode;
    uint64_t size;
    double secs;
    int (*run)(const Options&, const Endpoint&);
  };
  static const Defaults kModes[] = {
      {"ws-tput", 64 * 1024, 2, run_ws_tput},        {"ws-lat", 32, 2, run_ws_lat},
      {"ws-conns", 8, 30, run_ws_conns},              {"stream-tput", 256 * 1024, 2, run_stream_tput},
      {"poll-rtt", 32, 2, run_poll_rtt},              {"poll-idle", 8, 30, run_poll_idle},
      {"ws-up", 64 * 1024, 2, run_ws_up},            {"ws-down", 64 * 1024, 2, run_ws_down},
      {"serve", 0, 0, run_serve},
  };
  for (const auto& m : kModes) {
    if (o.mode != m.mode) continue;
    if (o.size == 0) o.size = m.size;
    if (o.secs <= 0) o.secs = m.secs;
    return m.run(o, ep);
  }
  usage();
  return kExitUsage;
}
