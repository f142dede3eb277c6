#include "proxy/smtp/received_header.h"

#include <charconv>
#include <ctime>

namespace smtpgate {
namespace {

// Client-supplied text going into a header: printable ASCII only, at most kMaxReceivedPart.
void append_header_safe(std::string& out, std::string_view s) {
  size_t at = out.size();
  out.append(s.substr(0, kMaxReceivedPart));
  for (size_t i = at; i < out.size(); ++i) {
    char c = out[i];
    if (c <= 32 || c >= 127 || c == '(' || c == ')') out[i] = '?';
  }
}

std::string_view rfc5322_date() {
  thread_local std::time_t cached_at = -1;  // per loop thread (workers)
  thread_local char buf[64];
  std::time_t now = std::time(nullptr);
  if (now != cached_at) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    cached_at = now;
  }
  return buf;
}

}  // namespace

void append_received_header(std::string& h, const ReceivedHeader& r) {
  h += "Received: from ";
  append_header_safe(h, r.helo);
  const bool v4 = r.client == nullptr || r.client->is_v4();
  h += v4 ? " ([" : " ([IPv6:";
  if (r.client) h += r.client->to_string();  // an IPv4 text fits std::string's inline buffer
  h += "])\r\n\tby ";
  h += r.hostname;
  h += " (smtpgate) with ";
  h += r.esmtp ? "ESMTP" : "SMTP";
  if (r.tls) h += 'S';
  if (r.authenticated) h += 'A';
  h += " id ";
  h += r.session_id;
  h += '.';
  char num[16];
  auto [end, ec] = std::to_chars(num, num + sizeof num, r.message_number);
  (void)ec;
  h.append(num, end);
  h += "\r\n\t(listener ";
  h += r.listener;
  if (r.authenticated && !r.login.empty()) {
    h += ", authenticated as ";
    append_header_safe(h, r.login);
  }
  h += ')';
  if (r.tls) {
    h += "\r\n\t(using ";
    h += r.tls_version;
    h += " with cipher ";
    h += r.tls_cipher;
    h += ')';
  }
  if (!r.recipient.empty() && r.recipient.size() <= kMaxReceivedPart) {
    h += "\r\n\tfor <";
    append_header_safe(h, r.recipient);
    h += '>';
  }
  h += "; ";
  h += rfc5322_date();
  h += "\r\n";
}

}  // namespace smtpgate
