#include "proxy/smtp/sasl_exchange.h"

#include "proxy/smtp/command.h"

namespace smtpgate::smtp {

SaslExchange::Outcome SaslExchange::prompt(const replies::FixedReply& r) {
  Outcome o;
  o.kind = Outcome::Kind::Prompt;
  o.reply = &r;
  return o;
}

SaslExchange::Outcome SaslExchange::failed(const replies::FixedReply& r) {
  Outcome o;
  o.kind = Outcome::Kind::Failed;
  o.reply = &r;
  return o;
}

void SaslExchange::reset() {
  step_ = Step::None;
  secure_wipe(login_);
}

SaslExchange::Outcome SaslExchange::start(std::string_view mechanism,
                                          std::optional<std::string_view> initial) {
  reset();
  if (iequals(mechanism, "PLAIN")) {
    if (!initial) {
      step_ = Step::PlainResponse;
      return prompt(replies::auth_plain_prompt());
    }
    if (*initial == "*") return failed(replies::auth_aborted());
    return plain(*initial);
  }
  if (iequals(mechanism, "LOGIN")) {
    step_ = Step::LoginUser;
    // RFC 4954 allows the username as an initial response.
    if (initial) return answer(*initial);
    return prompt(replies::auth_login_user_prompt());
  }
  Outcome o;
  o.kind = Outcome::Kind::Unsupported;
  o.reply = &replies::auth_mechanism_unknown();
  return o;
}

SaslExchange::Outcome SaslExchange::plain(std::string_view response) {
  auto decoded = decode_sasl_response(response);
  if (!decoded) return failed(replies::auth_bad_base64());
  auto creds = decode_plain(*decoded);
  secure_wipe(*decoded);
  if (!creds) return failed(replies::auth_malformed());
  Outcome o;
  o.kind = Outcome::Kind::Credentials;
  o.credentials = std::move(*creds);
  return o;
}

SaslExchange::Outcome SaslExchange::answer(std::string_view line) {
  const Step step = step_;
  step_ = Step::None;
  if (line == "*") {
    reset();
    return failed(replies::auth_aborted());
  }
  if (step == Step::PlainResponse) return plain(line);
  auto decoded = decode_sasl_response(line);
  if (!decoded) {
    reset();
    return failed(replies::auth_bad_base64());
  }
  if (step != Step::LoginPassword) {
    login_ = std::move(*decoded);
    step_ = Step::LoginPassword;
    return prompt(replies::auth_login_pass_prompt());
  }
  auto creds = make_login_credentials(login_, *decoded);
  secure_wipe(*decoded);
  reset();
  if (!creds) return failed(replies::auth_malformed());
  Outcome o;
  o.kind = Outcome::Kind::Credentials;
  o.credentials = std::move(*creds);
  return o;
}

}  // namespace smtpgate::smtp
