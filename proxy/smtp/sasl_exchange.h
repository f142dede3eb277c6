// The client side of AUTH PLAIN and AUTH LOGIN (RFC 4954, 4616): prompts, the client's
// base64 answers, and the credentials they make. No I/O and no policy: the dialogue says what
// each outcome means (the backend judges the credentials).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "policy/replies.h"
#include "proxy/smtp/sasl.h"

namespace smtpgate::smtp {

class SaslExchange {
 public:
  struct Outcome {
    enum class Kind : uint8_t {
      Prompt,       // `reply` is a 334 challenge: the next client line is the answer
      Credentials,  // `credentials` are complete: the backend judges them
      Failed,       // `reply` refuses the exchange; it counts as a failed login
      Unsupported,  // `reply` refuses an unknown mechanism; a syntax error, not a failed login
    };
    Kind kind = Kind::Failed;
    const replies::FixedReply* reply = nullptr;
    Credentials credentials;
  };

  SaslExchange() = default;
  SaslExchange(const SaslExchange&) = delete;
  SaslExchange& operator=(const SaslExchange&) = delete;
  ~SaslExchange() { reset(); }

  // AUTH <mechanism> [initial-response].
  Outcome start(std::string_view mechanism, std::optional<std::string_view> initial);
  // The client's answer to a prompt (a line without its CRLF).
  Outcome answer(std::string_view line);
  // The answer was longer than a SASL line may be: the exchange ends, as a failed login.
  void abandon() { reset(); }

  bool waiting() const { return step_ != Step::None; }  // the next line is an answer
  void reset();  // forgets the exchange, wiping the login it may hold

 private:
  enum class Step : uint8_t { None, PlainResponse, LoginUser, LoginPassword };
  static Outcome prompt(const replies::FixedReply& r);
  static Outcome failed(const replies::FixedReply& r);
  Outcome plain(std::string_view response);

  Step step_ = Step::None;
  std::string login_;  // AUTH LOGIN: the login while the password is asked
};

}  // namespace smtpgate::smtp
