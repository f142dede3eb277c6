// A policy decision: a value naming the stage, the rule, the verdict and the reply.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace smtpgate {

enum class Stage : uint8_t { Connect, Helo, StartTls, Auth, Mail, Rcpt, Data, Rset, Quit };
enum class Verdict : uint8_t { Allow, Reject, Tempfail, Ban };

std::string_view to_string(Stage s);
std::string_view to_string(Verdict v);

struct Reply {
  int code = 0;              // 0 = no reply (an allow that lets the session continue)
  std::string text;          // with the enhanced status code: "5.7.1 Relay access denied"
  bool close = false;        // close the connection after sending
  std::string line() const;  // "554 5.7.1 Relay access denied"
};

struct Decision {
  Stage stage = Stage::Connect;
  std::string_view rule = "default";  // stable rule id (SPEC §3); static storage
  Verdict verdict = Verdict::Allow;
  bool enforced = true;  // false in dry-run: logged, not acted on
  std::string reason;
  Reply reply;

  bool allowed() const { return verdict == Verdict::Allow; }
  // True when the session must act on it (a non-allow verdict that is enforced).
  bool blocks() const { return verdict != Verdict::Allow && enforced; }
};

}  // namespace smtpgate
