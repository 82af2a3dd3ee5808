#include "server.hpp"

#include <sys/socket.h>

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <thread>

#include "demo_service.hpp"
#include "front.hpp"
#include "http/http_util.hpp"
#include "http/static_files.hpp"
#include "routes.hpp"
#include "log.hpp"
#include "tls.hpp"
#include "tunnel/counts.hpp"
#include "tunnel/manager.hpp"
#include "workers.hpp"

namespace netwine {

Server::Server(Config config) : config_(std::move(config)) {}

Server::~Server() {
  // Worker threads first: they close their sockets and sessions on their own
  // threads and may still post here while doing so.
  if (workers_) workers_->stop();
  workers_.reset();
  mailbox_.reset();
  tunnels_.reset();
  front_.reset();
  demo_.reset();
  if (placeholder_ >= 0) close(placeholder_);
}

void Server::on_signal(evutil_socket_t sig, short, void* self) {
  auto* s = static_cast<Server*>(self);
  if (sig == SIGHUP) s->reload();
  else s->begin_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

void Server::reload() {
  log::info("SIGHUP: reloading");
  tunnels_->reload();
  if (tls_context_) {
    if (auto err = tls_context_->reload(); !err.empty())
      log::error("TLS reload failed, keeping the previous certificate: ", err);
    else
      log::info("TLS reload: new connections use ", tls_context_->describe());
  }
  // The CAs for tls:// targets: connections being set up keep the context they
  // started with (shared_ptr); new ones use the reloaded file.
  std::string error;
  if (auto fresh = tls::TargetTlsContext::create(config_.target_ca, error)) {
    target_tls_ = std::move(fresh);
    tunnels_->set_target_tls(target_tls_);
    if (!config_.target_ca.empty()) log::info("target TLS reload: CAs from ", config_.target_ca, " and the system");
  } else {
    log::error("target TLS reload failed, keeping the previous CAs: ", error);
  }
  // Every loop admits sessions: each gets a copy of what is in force now.
  if (workers_) workers_->each([rules = tunnels_->rules()](tunnel::Manager& m) { m.set_rules(rules); });
}

void Server::begin_shutdown(const char* why) {
  if (draining_) {
    log::info(why, " again: exiting now");
    finish_shutdown();
    return;
  }
  draining_ = true;
  log::info(why, ": no longer accepting; draining for at most ", config_.drain_timeout, "s");
  front_->stop_accepting();
  drain_timer_.reset(evtimer_new(base_.get(), [](evutil_socket_t, short, void* self) {
    static_cast<Server*>(self)->finish_shutdown();
  }, this));
  timeval tv = to_timeval(config_.drain_timeout);
  evtimer_add(drain_timer_.get(), &tv);
  if (workers_) {
    workers_draining_ = workers_->size();
    workers_->each([this](tunnel::Manager& m) {
      m.shutdown();
      m.on_drained([this] {
        mailbox_->post([this] {
          if (workers_draining_ > 0) --workers_draining_;
          check_drained();
        });
      });
    });
  }
  tunnels_->shutdown();
  tunnels_->on_drained([this] {
    main_drained_ = true;
    check_drained();
  });
}

void Server::check_drained() {
  // Every session of every thread has flushed: no need to wait for the deadline.
  if (!main_drained_ || workers_draining_ > 0) return;
  timeval now{0, 0};
  evtimer_add(drain_timer_.get(), &now);
}

void Server::finish_shutdown() { event_base_loopexit(base_.get(), nullptr); }

void Server::on_log_tick(evutil_socket_t, short, void* self) {
  static_cast<Server*>(self)->flush_log_summaries(true);
}

// Writes what the log throttles have counted and not reported yet; with
// `only_due`, only once their window is over (at most one summary per window).
void Server::flush_log_summaries(bool only_due) {
  if (front_) front_->flush_log_summaries(only_due);
  http::flush_log_summaries(only_due);
  if (tunnels_) tunnels_->flush_log_summaries(only_due);
}

bool Server::bind_all() {
  for (const auto& spec : config_.listen) {
    std::string bound, error;
    if (!front_->listen(spec, bound, error)) {
      log::error(error);
      return false;
    }
    bound_.push_back(bound);
    const char* scheme = !tls_acceptor_ ? "http" : config_.tls_only ? "https" : "http+https";
    log::info("listening on ", scheme, "://", bound_.back(), "/");
  }
  return true;
}

void Server::write_port_file() {
  if (config_.port_file.empty()) return;
  std::string tmp = config_.port_file + ".tmp";
  {
    std::ofstream f(tmp);
    for (const auto& b : bound_) f << b << "\n";
    if (demo_) f << "demo 127.0.0.1:" << demo_->port() << "\n";
  }
  std::rename(tmp.c_str(), config_.port_file.c_str());  // readers never see half a file
}

int Server::run() {
  std::signal(SIGPIPE, SIG_IGN);
  {
    // With the changelist, epoll_ctl calls for a descriptor are merged until the
    // loop polls: the write interest that evbuffers switch off and on around
    // almost every write costs no syscall (docs/PERFORMANCE.md, finding 2).
    event_config* cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    base_.reset(event_base_new_with_config(cfg));
    event_config_free(cfg);
  }
  if (!base_) {
    log::error("cannot create event base");
    return 1;
  }
  dns_.reset(evdns_base_new(base_.get(), EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                              EVDNS_BASE_DISABLE_WHEN_INACTIVE));
  if (!dns_) {
    // No resolv.conf: numeric targets and /etc/hosts names still work.
    dns_.reset(evdns_base_new(base_.get(), 0));
  }
  std::string error;
  if (!config_.tls_cert.empty()) {
    tls_context_ = tls::TlsContext::load(config_.tls_cert, config_.tls_key, error);
    if (!tls_context_) {
      log::error(error);
      return 2;
    }
    tls_acceptor_ = std::make_unique<tls::Acceptor>(base_.get(), *tls_context_, config_.tls_only);
    log::info("TLS: ", tls_context_->describe(),
              config_.tls_only ? "; plain HTTP is refused" : "; plain HTTP and TLS share each port");
  }
  target_tls_ = tls::TargetTlsContext::create(config_.target_ca, error);
  if (!target_tls_) {
    log::error(error);
    return 2;
  }

  if (config_.demo) {
    demo_ = std::make_unique<DemoService>(base_.get(), config_.demo_port);
    if (!demo_->ok()) {
      log::error("cannot start the demo service on port ", config_.demo_port);
      return 1;
    }
    log::info("demo line service on 127.0.0.1:", demo_->port(), " (target 'demo')");
  }
  counts_ = std::make_shared<tunnel::SessionCounts>();
  mailbox_ = std::make_unique<Mailbox>(base_.get());
  if (!make_placeholder()) return 1;
  front_ = std::make_unique<Front>(config_, base_.get(), tls_acceptor_.get(), placeholder_, mailbox_.get(), fronts_, 0);
  if (!front_->ready()) {
    log::error("this libevent's evhttp cannot be handed accepted sockets (front.cpp, find_evhttp_accept); "
               "netwine needs libevent 2.1");
    return 1;
  }
  fronts_.loops.push_back(front_.get());
  tunnels_ = tunnel::Manager::create(config_, base_.get(), dns_.get(), *front_, demo_ ? demo_->port() : 0,
                                     target_tls_, counts_, error);
  if (!tunnels_) {
    log::error(error);
    return 2;
  }
  static_site_ = std::make_unique<http::StaticSite>(
      config_.www_dir,
      std::map<std::string, std::string>{{"/netwine.js", config_.js_client_dir + "/netwine.js"}});
  front_->set_router([this](evhttp_request* req) { route_request(req, *tunnels_, *static_site_); });
  if (!start_workers()) return 1;

  if (!bind_all()) return 1;
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    signals_.emplace_back(evsignal_new(base_.get(), sig, &Server::on_signal, this));
    evsignal_add(signals_.back().get(), nullptr);
  }
  write_port_file();
  log_tick_.reset(event_new(base_.get(), -1, EV_PERSIST, &Server::on_log_tick, this));
  timeval second{1, 0};
  evtimer_add(log_tick_.get(), &second);
  event_base_dispatch(base_.get());
  if (workers_) workers_->stop();
  flush_log_summaries(false);
  log::info("stopped");
  return exit_code_;
}

bool Server::make_placeholder() {
  placeholder_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (placeholder_ < 0) {
    log::error("cannot create a socket: ", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    return false;
  }
  return true;
}

bool Server::start_workers() {
  int loops = config_.threads;
  if (loops == 0) {
    // One per CPU this process may run on (taskset, cpusets), not per CPU the
    // machine has.
    cpu_set_t set;
    CPU_ZERO(&set);
    loops = sched_getaffinity(0, sizeof set, &set) == 0
                ? CPU_COUNT(&set)
                : static_cast<int>(std::thread::hardware_concurrency());
    loops = std::clamp(loops, 1, 64);
  }
  if (loops <= 1) return true;
  workers_ = std::make_unique<WorkerPool>(config_, counts_, base_.get(), mailbox_.get());
  std::string error;
  if (!workers_->start(loops - 1, fronts_, placeholder_, tunnels_->rules(), *static_site_, tls_context_.get(),
                       error)) {
    log::error(error);
    return false;
  }
  tunnels_->set_workers(workers_.get());
  fronts_.spread = true;
  log::info(loops, " event-loop threads: connections take turns between them; each session lives on one");
  return true;
}

}  // namespace netwine
