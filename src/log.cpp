#include "log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>

namespace netwine::log {
namespace {

LogLevel g_level = LogLevel::Info;
LogFormat g_format = LogFormat::Text;
FILE* g_access = nullptr;  // stderr, a file we own, or null (off)
bool g_access_owned = false;

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "?";
}

// Text fields that contain spaces, quotes or control bytes are quoted and escaped,
// so a hostile path or origin cannot forge a second record.
std::string quote_if_needed(const std::string& v) {
  bool plain = !v.empty();
  for (unsigned char ch : v)
    if (ch <= ' ' || ch == '"' || ch == '\\' || ch >= 0x7f) { plain = false; break; }
  if (plain) return v;
  std::string out = "\"";
  for (unsigned char ch : v) {
    if (ch == '"' || ch == '\\') { out += '\\'; out += static_cast<char>(ch); }
    else if (ch < ' ' || ch >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    } else out += static_cast<char>(ch);
  }
  return out + "\"";
}

}  // namespace

std::string configure(LogLevel level, const std::string& access_log, LogFormat format) {
  g_level = level;
  g_format = format;
  if (g_access_owned && g_access) std::fclose(g_access);
  g_access = nullptr;
  g_access_owned = false;
  if (access_log.empty()) return {};
  if (access_log == "-") {
    g_access = stderr;
    return {};
  }
  g_access = std::fopen(access_log.c_str(), "a");
  if (!g_access) return access_log + ": cannot open access log for appending";
  g_access_owned = true;
  std::setvbuf(g_access, nullptr, _IOLBF, 0);
  return {};
}

bool enabled(LogLevel level) { return static_cast<int>(level) >= static_cast<int>(g_level); }

void write(LogLevel level, const std::string& message) {
  std::fprintf(stderr, "%s netwine[%s] %s\n", timestamp().c_str(), level_name(level), message.c_str());
}

bool access_open() { return g_access != nullptr; }

void access(std::string_view kind, const Record& r) {
  if (!g_access) return;
  std::string line;
  if (g_format == LogFormat::Json) {
    nlohmann::json j;
    j["time"] = timestamp();
    j["kind"] = std::string(kind);
    for (const auto& [k, v] : r.text_fields) j[k] = v;
    for (const auto& [k, v] : r.number_fields) j[k] = v;
    for (const auto& [k, v] : r.real_fields) j[k] = v;
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = timestamp() + " " + std::string(kind);
    for (const auto& [k, v] : r.text_fields) line += " " + k + "=" + quote_if_needed(v);
    for (const auto& [k, v] : r.number_fields) line += " " + k + "=" + std::to_string(v);
    for (const auto& [k, v] : r.real_fields) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.3f", v);
      line += " " + k + "=" + buf;
    }
  }
  line += "\n";
  std::fwrite(line.data(), 1, line.size(), g_access);
  std::fflush(g_access);
}

double monotonic_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

bool Throttle::allow(uint64_t& suppressed, double& over_seconds) {
  double now = monotonic_seconds();
  if (window_start_ < 0 || now - window_start_ >= window_) {
    window_start_ = now;
    in_window_ = 0;
  }
  suppressed = 0;
  over_seconds = 0;
  if (in_window_ < burst_) {
    ++in_window_;
    if (suppressed_) {
      suppressed = suppressed_;
      over_seconds = suppressed_last_ - suppressed_since_;
      suppressed_ = 0;
    }
    return true;
  }
  if (suppressed_++ == 0) suppressed_since_ = now;
  suppressed_last_ = now;
  return false;
}

uint64_t Throttle::take_pending(double& over_seconds, bool only_when_window_over) {
  over_seconds = 0;
  if (!suppressed_) return 0;
  double now = monotonic_seconds();
  if (only_when_window_over) {
    if (now - window_start_ < window_) return 0;
    // A new window starts with this summary, so the next flood gets one more
    // summary at the earliest a window later, not a full line at once.
    window_start_ = now;
    in_window_ = burst_;
  }
  uint64_t n = suppressed_;
  over_seconds = suppressed_last_ - suppressed_since_;
  suppressed_ = 0;
  return n;
}

std::string redact_key(std::string_view key) {
  if (key.size() <= 6) return std::string(key);
  return std::string(key.substr(0, 6)) + "...";
}

std::string tenths(double seconds) {
  char span[32];
  std::snprintf(span, sizeof span, "%.1f", seconds);
  return span;
}

std::string held_back_note(uint64_t more, double seconds, std::string_view what) {
  if (!more) return {};
  return " (and " + std::to_string(more) + " more " + std::string(what) + " in " + tenths(seconds) + "s before)";
}

std::string timestamp() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = time_point_cast<seconds>(now);
  auto ms = duration_cast<milliseconds>(now - secs).count();
  std::time_t t = system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[80];  // large enough for any int fields: no truncation warning
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(ms));
  return buf;
}

}  // namespace netwine::log
