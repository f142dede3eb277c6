// smtpgate: SMTP policy gateway. Subcommands: run, check, explain, learn, replay, bans, logins.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "policy/loader.h"
#include "proxy/admin_cli.h"
#include "proxy/admin_client.h"
#include "proxy/gateway.h"
#include "proxy/smtp/explain.h"
#include "proxy/state_journal.h"
#include "proxy/tls_files.h"
#include "proxy/tools/learn.h"
#include "proxy/tools/replay.h"
#include "proxy/unix_time.h"

namespace {

using namespace smtpgate;

LoadResult load_for_cli(const std::string& path, bool check_files = true) {
  LoadOptions opts;
  opts.check_files = check_files;
  opts.read_list_files = true;
  opts.tls_checker = check_tls_files;
  return load_policy_file(path, opts);
}

void print_errors(const LoadResult& r) {
  for (const auto& e : r.errors) std::cerr << e.to_string() << "\n";
  std::cerr << r.errors.size() << (r.errors.size() == 1 ? " error" : " errors") << "\n";
}

int cmd_check(const std::string& path) {
  LoadResult r = load_for_cli(path);
  if (!r.ok()) {
    print_errors(r);
    return 1;
  }
  const Policy& p = *r.policy;
  std::string listeners;
  for (const auto& l : p.listeners) {
    if (!listeners.empty()) listeners += ", ";
    listeners += l.name + " (" + std::string(to_string(l.cls)) + ")";
  }
  std::cout << path << ": OK: " << p.listeners.size() << " listener"
            << (p.listeners.size() == 1 ? "" : "s") << " [" << listeners << "], backend "
            << p.backend.host << ":" << p.backend.port << ", mode "
            << (p.mode == Mode::Enforce ? "enforce" : "dry-run") << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"smtpgate: SMTP policy gateway in front of an existing mail server"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("smtpgate ") + SMTPGATE_VERSION);

  std::string policy_path;

  auto* run = app.add_subcommand("run", "run the gateway");
  RunOptions run_opts;
  std::string log_format;
  run->add_option("-c,--config", run_opts.policy_path, "policy file")->required();
  run->add_flag("--dry-run", run_opts.dry_run, "log what would be rejected, enforce nothing");
  run->add_option("--log-format", log_format, "json or text")
      ->check(CLI::IsMember({"json", "text"}));

  auto* check = app.add_subcommand("check", "validate a policy file");
  check->add_option("-c,--config", policy_path, "policy file")->required();

  auto* expl = app.add_subcommand("explain", "show the decision of every stage for a session");
  std::string client, listener;
  ExplainInput in;
  std::string auth_user, mail_from;
  bool auth_ok = false, auth_fail = false, json = false;
  expl->add_option("-c,--config", policy_path, "policy file")->required();
  expl->add_option("--client", client, "client IP address")->required();
  expl->add_option("--listener", in.listener, "listener name")->required();
  expl->add_flag("--tls", in.tls, "the session has TLS (STARTTLS or implicit)");
  expl->add_option("--helo", in.helo, "HELO/EHLO name");
  auto* au = expl->add_option("--auth-user", auth_user, "login used for AUTH");
  auto* ok = expl->add_flag("--auth-ok", auth_ok, "the backend accepts the credentials (default)");
  auto* fail = expl->add_flag("--auth-fail", auth_fail, "the backend rejects the credentials");
  ok->needs(au)->excludes(fail);
  fail->needs(au);
  expl->add_option("--mail-from", mail_from, "envelope sender (\"<>\" for a bounce)");
  expl->add_option("--rcpt", in.rcpts, "envelope recipient (repeatable)");
  expl->add_flag("--json", json, "print one JSON document");

  auto* learn =
      app.add_subcommand("learn", "propose submission senders and client lists from logs");
  auto* replay = app.add_subcommand("replay", "judge recorded transactions under a new policy");
  std::vector<std::string> log_paths;
  for (auto* tool : {learn, replay}) {
    tool->add_option("-c,--config", policy_path, "policy file")->required();
    tool->add_option("LOG", log_paths, "JSON log files, plain or gzip")->required();
    tool->add_flag("--json", json, "print one JSON document");
  }

  auto* bans = app.add_subcommand("bans", "list, add or lift bans through the admin endpoint");
  bans->require_subcommand(1);
  std::string admin_addr;
  bans->add_option("--admin", admin_addr, "admin address host:port (default: from -c policy)");
  bans->add_option("-c,--config", policy_path, "policy file naming admin.listen");
  auto* bans_list = bans->add_subcommand("list", "list active bans");
  auto* bans_unban = bans->add_subcommand("unban", "lift the ban of an IP");
  auto* bans_add_cmd = bans->add_subcommand("add", "ban an IP now");
  // `bans list --admin X`: options of `bans` may follow its subcommand.
  bans_list->fallthrough();
  bans_unban->fallthrough();
  bans_add_cmd->fallthrough();
  bans_list->add_flag("--json", json, "the admin endpoint's JSON, not a table");
  std::string add_ip, add_for, add_reason;
  bans_add_cmd->add_option("ip", add_ip, "IP address")->required();
  bans_add_cmd->add_option("--for", add_for, "duration, e.g. 1d (default brute_force.ban)");
  bans_add_cmd->add_option("--reason", add_reason, "why (logged with the ban)");
  std::string unban_ip;
  bans_unban->add_option("ip", unban_ip, "IP address")->required();

  auto* logins = app.add_subcommand("logins", "list or release locked logins (admin endpoint)");
  logins->require_subcommand(1);
  logins->add_option("--admin", admin_addr, "admin address host:port (default: from -c policy)");
  logins->add_option("-c,--config", policy_path, "policy file naming admin.listen");
  auto* logins_list_cmd = logins->add_subcommand("list", "list locked logins");
  auto* logins_release_cmd = logins->add_subcommand("release", "lift a login's lock");
  logins_list_cmd->fallthrough();
  logins_release_cmd->fallthrough();
  logins_list_cmd->add_flag("--json", json, "the admin endpoint's JSON, not a table");
  std::string release_login;
  logins_release_cmd->add_option("login", release_login, "the login")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a bad command line exits 1, as the README documents (not
    // CLI11's own codes, such as 106 for a missing -c).
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 1;
  }

  if (*run) {
    if (!log_format.empty())
      run_opts.log_format = log_format == "text" ? LogFormat::Text : LogFormat::Json;
    return run_gateway(run_opts);
  }
  if (*check) return cmd_check(policy_path);
  if (*expl) {
    // Certificates and the state directory belong to the production machine; list files
    // are read because decisions depend on them.
    LoadResult r = load_for_cli(policy_path, false);
    if (!r.ok()) {
      print_errors(r);
      return 1;
    }
    auto ip = IpAddress::parse(client);
    if (!ip) {
      std::cerr << "--client: \"" << client << "\" is not an IP address\n";
      return 1;
    }
    in.client = *ip;
    if (!auth_user.empty()) in.auth_user = auth_user;
    in.auth_ok = !auth_fail;
    if (!mail_from.empty()) in.mail_from = mail_from;
    // Locked and suspended logins as the running gateway remembers them (read, never changed).
    BanList remembered_bans;
    LoginGuard remembered_logins;
    LoginBreaker remembered_breaker;
    if (const std::string& state = r.policy->brute_force.state_file; !state.empty()) {
      const std::string err = StateJournal::load(state, &remembered_bans, &remembered_logins,
                                                 &remembered_breaker, true);
      if (!err.empty()) std::cerr << "note: " << err << "; explaining without it\n";
      in.logins = &remembered_logins;
      in.breaker = &remembered_breaker;
      in.now = unix_now();
    }
    auto result = explain(*r.policy, in);
    if (!result) {
      std::cerr << result.error() << "\n";
      return 1;
    }
    std::cout << (json ? explain_json(*result) : explain_text(*result));
    return 0;
  }
  if (*learn || *replay) {
    // As explain: list files are read (the report names what they allow), certificates and
    // the state directory belong to the production machine.
    LoadResult r = load_for_cli(policy_path, false);
    if (!r.ok()) {
      print_errors(r);
      return 1;
    }
    std::string out, error;
    std::vector<std::string> warnings;
    if (*learn) {
      auto report = learn_files(*r.policy, log_paths);
      if (report) {
        out = json ? learn_json(*report) : learn_text(*report);
        warnings = report->warnings;
      } else {
        error = report.error();
      }
    } else {
      auto report = replay_files(*r.policy, log_paths);
      if (report) {
        out = json ? replay_json(*report) : replay_text(*report);
        warnings = report->warnings;
      } else {
        error = report.error();
      }
    }
    if (!error.empty()) {
      std::cerr << error << "\n";
      return 1;
    }
    std::cout << out;
    // A file cut short (a corrupt or truncated gzip) is reported in the output too; the exit
    // status says the report is incomplete.
    for (const auto& w : warnings) std::cerr << "warning: " << w << "\n";
    return warnings.empty() ? 0 : 1;
  }
  // bans and logins talk to the admin endpoint: --admin, or admin.listen from -c.
  auto resolve_admin = [&](const char* what) {
    if (!admin_addr.empty()) return true;
    if (policy_path.empty()) {
      std::cerr << what << ": give --admin HOST:PORT or -c policy.json\n";
      return false;
    }
    LoadResult r = load_for_cli(policy_path);
    if (!r.ok()) {
      print_errors(r);
      return false;
    }
    if (r.policy->admin.host.empty()) {
      std::cerr << what << ": " << policy_path << " has no admin.listen\n";
      return false;
    }
    admin_addr = r.policy->admin.host + ":" + std::to_string(r.policy->admin.port);
    return true;
  };
  if (*logins) {
    if (!resolve_admin("logins")) return 1;
    if (*logins_list_cmd) return logins_list(admin_addr, json);
    if (*logins_release_cmd) return logins_release(admin_addr, release_login);
  }
  if (*bans) {
    if (!resolve_admin("bans")) return 1;
    if (*bans_list) return smtpgate::bans_list(admin_addr, json);
    if (*bans_add_cmd) return bans_add(admin_addr, add_ip, add_for, add_reason);
    if (*bans_unban) return admin_request(admin_addr, "DELETE", "/bans/" + unban_ip);
  }
  return 1;
}
