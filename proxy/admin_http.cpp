#include "proxy/admin_http.h"

#include <algorithm>
#include <cassert>
#include <charconv>

#include "policy/domain_set.h"
#include "proxy/connection.h"

namespace smtpgate {
namespace {

constexpr std::string_view kServerMethods = "GET, POST, DELETE";
constexpr int kBacklog = 128;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos))
      return false;
  return true;
}

// Where the request head ends (just past the empty line), searching from `from`; npos if
// it has not arrived. A bare LF line end is accepted as well as CRLF.
size_t head_end(std::string_view buf, size_t from) {
  for (size_t i = buf.find('\n', from); i != std::string_view::npos; i = buf.find('\n', i + 1)) {
    if (i + 1 < buf.size() && buf[i + 1] == '\n') return i + 2;
    if (i + 2 < buf.size() && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

AdminResponse error_response(int status) {
  AdminResponse r;
  r.status = status;
  r.body = std::string(http_reason(status)) + "\n";
  if (status == 405) r.allow = kServerMethods;
  return r;
}

// The outcome of reading a request head: a request for the handler, or an error reply.
struct ParsedRequest {
  std::string_view method;
  std::string_view path;
  std::string_view query;
  int error = 0;          // an HTTP status when the request is refused by the server itself
  bool has_body = false;  // the client announced a body it may still be sending
};

ParsedRequest parse_head(std::string_view head) {
  ParsedRequest req;
  size_t eol = head.find('\n');
  std::string_view line = trim(head.substr(0, eol));
  std::string_view rest = head.substr(eol + 1);

  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    req.error = 400;
    return req;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || target.empty() || target.front() != '/') {
    req.error = 400;
    return req;
  }
  for (char c : target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      req.error = 400;
      return req;
    }
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    req.error = version.substr(0, 5) == "HTTP/" ? 505 : 400;
    return req;
  }

  // Header fields: only the ones that announce a body matter, the rest are checked for form.
  while (!rest.empty()) {
    eol = rest.find('\n');
    std::string_view field = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    if (!field.empty() && field.back() == '\r') field.remove_suffix(1);
    if (field.empty()) break;  // the end of the head
    size_t colon = field.find(':');
    // Obsolete line folding and malformed names are refused (RFC 9112 section 5).
    if (colon == std::string_view::npos || !is_token(field.substr(0, colon))) {
      req.error = 400;
      return req;
    }
    std::string_view name = field.substr(0, colon);
    std::string_view value = trim(field.substr(colon + 1));
    if (iequals(name, "Content-Length")) {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size()) {
        req.error = 400;
        return req;
      }
      if (n > 0) {
        req.has_body = true;
        req.error = 413;  // no admin request takes a body
      }
    } else if (iequals(name, "Transfer-Encoding")) {
      req.has_body = true;
      req.error = 501;
    }
  }
  if (req.error) return req;

  req.method = method;
  const size_t q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string_view::npos) req.query = target.substr(q + 1);
  if (method != "GET" && method != "POST" && method != "DELETE") req.error = 405;
  return req;
}

std::string serialize(const AdminResponse& r) {
  std::string out = "HTTP/1.1 ";
  out += std::to_string(r.status);
  out += ' ';
  out += http_reason(r.status);
  out += "\r\nContent-Type: ";
  out += r.content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(r.body.size());
  out += "\r\nCache-Control: no-store\r\nConnection: close\r\n";
  if (!r.allow.empty()) {
    out += "Allow: ";
    out += r.allow;
    out += "\r\n";
  }
  out += "\r\n";
  out += r.body;
  return out;
}

}  // namespace

std::string_view http_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 422:
      return "Unprocessable Content";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "";
  }
}

// ---------------------------------------------------------------- one admin connection

class AdminServer::Client final : public Connection::Handler, public Timer::Handler {
 public:
  explicit Client(AdminServer& server) : server_(server) {
    conn_ = Connection::create(server.loop_, this);
    timer_ = Timer::create(server.loop_, this);
  }
  ~Client() { assert(state_ == State::Done); }

  void start(uv_stream_t* listener) {
    if (conn_->accept(listener) != 0) {
      finish();
      return;
    }
    timer_->start(server_.request_timeout_);
    conn_->start_reading();
  }

  // Closes both handles (they free themselves) and hands this object to the reaper.
  void finish() {
    if (state_ == State::Done) return;
    state_ = State::Done;
    conn_.reset();
    timer_.reset();
    server_.retire(this);
  }

  std::list<std::unique_ptr<Client>>::iterator self;

 private:
  enum class State { Reading, Responding, Lingering, Done };

  void on_connected(Connection&, int) override {}

  void on_data(Connection&, std::string_view data) override {
    switch (state_) {
      case State::Reading:
        read_head(data);
        break;
      case State::Responding:
        discarded_ += data.size();
        break;
      case State::Lingering:
        discarded_ += data.size();
        if (discarded_ > kMaxLingerBytes) finish();
        break;
      case State::Done:
        break;
    }
  }

  void on_eof(Connection&, int status) override {
    // A client that half-closes after its request still gets the reply.
    if (state_ == State::Responding && status == UV_EOF) {
      peer_eof_ = true;
      return;
    }
    finish();
  }

  void on_drained(Connection&) override {
    if (state_ != State::Responding) return;
    if (!linger_ || peer_eof_) {
      finish();
      return;
    }
    // Our FIN tells a client that reads to the end that the reply is complete, while the
    // input it may still be sending is read and dropped until it closes too.
    auto* req = new uv_shutdown_t{};
    int rc = uv_shutdown(req, reinterpret_cast<uv_stream_t*>(conn_->handle()),
                         [](uv_shutdown_t* r, int) { delete r; });  // also runs on close
    if (rc != 0) {
      delete req;
      finish();
      return;
    }
    state_ = State::Lingering;
    timer_->start(server_.linger_timeout_);
  }

  void on_timer(Timer&) override {
    if (state_ == State::Reading) {
      respond(error_response(408), false);
      return;
    }
    finish();  // the client does not read its reply, or keeps sending while we linger
  }

  void read_head(std::string_view data) {
    size_t old = head_.size();
    size_t take = std::min(data.size(), kMaxRequestHead - old);
    head_.append(data.substr(0, take));
    size_t end = head_end(head_, old >= 2 ? old - 2 : 0);
    if (end == std::string::npos) {
      if (head_.size() >= kMaxRequestHead) respond(error_response(431), true);
      return;
    }
    bool more_input = end < head_.size() || take < data.size();
    ParsedRequest req = parse_head(std::string_view(head_).substr(0, end));
    if (req.error) {
      respond(error_response(req.error), req.has_body || more_input);
      return;
    }
    AdminResponse r = server_.handler_.handle(req.method, req.path, req.query);
    if (state_ != State::Reading) return;  // the handler closed the server
    respond(r, more_input);
  }

  // Queues the reply; finish() follows once it is written. Must be the last thing a
  // callback does: flush() can complete at once and finish() from on_drained.
  void respond(const AdminResponse& r, bool linger) {
    state_ = State::Responding;
    linger_ = linger;
    head_.clear();
    head_.shrink_to_fit();
    // The request deadline keeps running (a client that does not read is dropped); a
    // timed-out request gets a short grace to take its 408.
    if (!timer_->active()) timer_->start(server_.linger_timeout_);
    conn_->write(serialize(r));
    conn_->flush();
  }

  AdminServer& server_;
  HandlePtr<Connection> conn_;
  HandlePtr<Timer> timer_;
  State state_ = State::Reading;
  std::string head_;
  bool linger_ = false;
  bool peer_eof_ = false;
  size_t discarded_ = 0;
};

// ---------------------------------------------------------------- the server

AdminServer::AdminServer(uv_loop_t* loop, Handler& handler) : loop_(loop), handler_(handler) {}

AdminServer::~AdminServer() {
  close();
  // Every client is closed; their handles no longer point at them.
  retired_.clear();
}

std::string AdminServer::listen(const std::string& host, uint16_t port) {
  std::string where =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  if (listener_) return "admin endpoint " + where + ": already listening";
  sockaddr_storage addr{};
  int rc = host.find(':') != std::string::npos
               ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr))
               : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) return "admin endpoint " + where + ": not an IP address";

  auto* tcp = new uv_tcp_t{};
  uv_tcp_init(loop_, tcp);
  tcp->data = this;
  rc = uv_tcp_bind(tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp), kBacklog, on_connection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(tcp),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    return "admin endpoint " + where + ": " + uv_strerror(rc);
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  listener_ = tcp;
  if (!reaper_) reaper_ = Timer::create(loop_, this);
  return {};
}

void AdminServer::close() {
  if (listener_) {
    listener_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(listener_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    listener_ = nullptr;
  }
  while (!clients_.empty()) clients_.front()->finish();
  reaper_.reset();
  // retired_ is freed by the destructor: close() may run under a client's callback.
}

void AdminServer::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<AdminServer*>(server->data);
  if (!self || status < 0) return;
  self->accept();
}

void AdminServer::accept() {
  if (clients_.size() >= kMaxConnections) {
    // Accepted only to be closed, so the backlog does not fill with clients left waiting.
    HandlePtr<Connection> c = Connection::create(loop_, nullptr);
    c->accept(reinterpret_cast<uv_stream_t*>(listener_));
    return;
  }
  clients_.push_back(std::make_unique<Client>(*this));
  Client* c = clients_.back().get();
  c->self = std::prev(clients_.end());
  c->start(reinterpret_cast<uv_stream_t*>(listener_));
}

void AdminServer::retire(Client* c) {
  retired_.push_back(std::move(*c->self));
  clients_.erase(c->self);
  if (reaper_ && !reaper_->active()) reaper_->start(std::chrono::milliseconds(0));
}

void AdminServer::on_timer(Timer&) {
  retired_.clear();
}

}  // namespace smtpgate
