// Session counts shared by every event-loop thread (server.hpp, "Threads"), so
// --max-sessions and --max-sessions-per-client limit the process, not a thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace netwine::tunnel {

class SessionCounts {
 public:
  enum class Admit { Ok, TooMany, TooManyForClient };

  // Counts a new session for `client` if both limits allow it.
  Admit admit(const std::string& client, uint64_t max_total, uint64_t max_per_client) {
    std::lock_guard lock(mu_);
    if (total_ >= max_total) return Admit::TooMany;
    uint64_t& mine = per_client_[client];
    if (mine >= max_per_client) {
      if (mine == 0) per_client_.erase(client);
      return Admit::TooManyForClient;
    }
    ++mine;
    ++total_;
    return Admit::Ok;
  }

  // The session admitted for `client` is gone.
  void release(const std::string& client) {
    std::lock_guard lock(mu_);
    if (total_ > 0) --total_;
    if (auto it = per_client_.find(client); it != per_client_.end() && --it->second == 0) per_client_.erase(it);
  }

  uint64_t total() const {
    std::lock_guard lock(mu_);
    return total_;
  }

 private:
  mutable std::mutex mu_;
  uint64_t total_ = 0;
  std::unordered_map<std::string, uint64_t> per_client_;
};

}  // namespace netwine::tunnel
