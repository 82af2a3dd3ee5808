// The server log (levels, stderr) and the access log (one record per HTTP request
// and one per tunnel session, text or JSON lines).
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"

namespace netwine::log {

// Configures both logs. Returns an error text if the access log cannot be opened.
std::string configure(LogLevel level, const std::string& access_log, LogFormat format);
bool enabled(LogLevel level);
void write(LogLevel level, const std::string& message);

template <typename... Args>
void emit(LogLevel level, Args&&... args) {
  if (!enabled(level)) return;
  std::ostringstream os;
  (os << ... << args);
  write(level, os.str());
}
template <typename... Args> void debug(Args&&... a) { emit(LogLevel::Debug, a...); }
template <typename... Args> void info(Args&&... a) { emit(LogLevel::Info, a...); }
template <typename... Args> void warn(Args&&... a) { emit(LogLevel::Warn, a...); }
template <typename... Args> void error(Args&&... a) { emit(LogLevel::Error, a...); }

// Keeps one kind of line from flooding the log (an attacker guessing keys, accept
// failing with EMFILE ten times a second): in each `window` the first `burst`
// occurrences may be logged; the rest are only counted, and the count is handed
// to the next occurrence that may be logged, or to take_pending() (the server
// asks every second, and at exit), which writes it as a summary. At most one
// summary per window either way.
class Throttle {
 public:
  Throttle(double window_seconds, uint64_t burst) : window_(window_seconds), burst_(burst) {}
  // True if this occurrence may be logged in full. `suppressed` gets how many were
  // counted since the last summary (to be mentioned now, when non-zero) and
  // `over_seconds` the time from the first of them to the last.
  bool allow(uint64_t& suppressed, double& over_seconds);
  // Counted occurrences not yet reported, and the time they span; resets the count.
  // With `only_when_window_over`, 0 until the window they fell in has ended.
  uint64_t take_pending(double& over_seconds, bool only_when_window_over = false);

 private:
  double window_;
  uint64_t burst_;
  double window_start_ = -1;      // monotonic seconds; -1 before the first occurrence
  uint64_t in_window_ = 0;        // occurrences in the current window
  uint64_t suppressed_ = 0;       // counted, not yet reported
  double suppressed_since_ = 0;   // when the first of them happened
  double suppressed_last_ = 0;    // and the last
};

// Monotonic seconds (for Throttle and durations).
double monotonic_seconds();

// One access-log record: ordered fields, written as `k=v` text or a JSON object.
struct Record {
  std::vector<std::pair<std::string, std::string>> text_fields;
  std::vector<std::pair<std::string, int64_t>> number_fields;
  std::vector<std::pair<std::string, double>> real_fields;
  Record& add(std::string k, std::string v) { text_fields.emplace_back(std::move(k), std::move(v)); return *this; }
  Record& add(std::string k, int64_t v) { number_fields.emplace_back(std::move(k), v); return *this; }
  Record& add_real(std::string k, double v) { real_fields.emplace_back(std::move(k), v); return *this; }
};

// Writes `record` of `kind` ("http" or "session") to the access log, if one is open.
void access(std::string_view kind, const Record& record);
// Whether an access log is open (so a caller can skip building a record).
bool access_open();

// A secret shortened for logs: the first 6 characters and an ellipsis.
std::string redact_key(std::string_view key);

// For a throttled line: " (and N more WHAT in S.Ss before)", or "" when `more` is 0.
std::string held_back_note(uint64_t more, double seconds, std::string_view what);

// Seconds with one decimal ("2.5"), as throttled-line summaries give spans.
std::string tenths(double seconds);

// Now as ISO 8601 UTC with milliseconds.
std::string timestamp();

}  // namespace netwine::log
