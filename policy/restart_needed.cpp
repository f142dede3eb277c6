#include "policy/restart_needed.h"

#include "policy/text.h"

namespace smtpgate {
namespace {

std::string listen_text(const std::string& host, uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string listener_text(const Listener& l) {
  return "listen " + listen_text(l.host, l.port) + ", class " + std::string(to_string(l.cls)) +
         ", tls " + std::string(to_string(l.tls)) + (l.proxy_protocol ? ", proxy_protocol" : "");
}

}  // namespace

std::vector<std::string> changes_needing_restart(const Policy& running, const Policy& loaded) {
  std::vector<std::string> out;
  const auto& a = running.listeners;
  const auto& b = loaded.listeners;
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const std::string at = "listeners[" + std::to_string(i) + "] ";
    if (i >= a.size()) {
      out.push_back(at + quoted(b[i].name) + " added (needs a restart)");
    } else if (i >= b.size()) {
      out.push_back(at + quoted(a[i].name) + " removed (needs a restart)");
    } else if (a[i].name != b[i].name || listener_text(a[i]) != listener_text(b[i])) {
      out.push_back(at + quoted(a[i].name) + ": " + listener_text(a[i]) + " -> " +
                    quoted(b[i].name) + ": " + listener_text(b[i]) + " (needs a restart)");
    }
  }
  if (running.log.path != loaded.log.path)
    out.push_back("log.path " + quoted(running.log.path) + " -> " + quoted(loaded.log.path) +
                  " (needs a restart)");
  if (running.admin.host != loaded.admin.host || running.admin.port != loaded.admin.port)
    out.push_back("admin.listen " +
                  (running.admin.host.empty()
                       ? std::string("off")
                       : listen_text(running.admin.host, running.admin.port)) +
                  " -> " +
                  (loaded.admin.host.empty() ? std::string("off")
                                             : listen_text(loaded.admin.host, loaded.admin.port)) +
                  " (needs a restart)");
  const auto shared_text = [](const Policy& p) {
    return p.shared ? p.shared->redis + " " + p.shared->prefix : std::string("off");
  };
  if (shared_text(running) != shared_text(loaded))
    out.push_back("shared " + quoted(shared_text(running)) + " -> " + quoted(shared_text(loaded)) +
                  " (needs a restart)");
  if (running.workers != loaded.workers)
    out.push_back("workers " + std::to_string(running.workers) + " -> " +
                  std::to_string(loaded.workers) + " (needs a restart)");
  if (running.brute_force.state_file != loaded.brute_force.state_file)
    out.push_back("brute_force.state_file " + quoted(running.brute_force.state_file) + " -> " +
                  quoted(loaded.brute_force.state_file) + " (needs a restart)");
  return out;
}

}  // namespace smtpgate
