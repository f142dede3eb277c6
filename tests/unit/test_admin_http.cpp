#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "proxy/admin_http.h"

using smtpgate::AdminResponse;
using smtpgate::AdminServer;

namespace {

// Routes like the gateway's admin endpoint, and remembers what it was asked.
class FakeAdmin final : public AdminServer::Handler {
 public:
  AdminResponse handle(std::string_view method, std::string_view path,
                       std::string_view /*query*/) override {
    calls.push_back(std::string(method) + " " + std::string(path));
    if (path == "/healthz") {
      if (method != "GET") return {405, "text/plain", "use GET\n", "GET"};
      return {200, "text/plain; charset=utf-8", "ok\n"};
    }
    if (path == "/bans" && method == "GET") return {200, "application/json", R"({"bans":[]})"};
    if (path.substr(0, 6) == "/bans/" && method == "DELETE")
      return {200, "text/plain", "unbanned\n"};
    if (path == "/close" && server) {
      server->close();  // a handler may shut the endpoint down under its own call
      return {200, "text/plain", "closing\n"};
    }
    return {404, "text/plain", "not found\n"};
  }
  std::vector<std::string> calls;  // only touched on the loop thread
  AdminServer* server = nullptr;
};

// A blocking loopback client: every wait is bounded so a broken server fails the test.
int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may have answered and closed already
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads until the server closes (or the bounded wait ends).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string request(uint16_t port, std::string_view raw) {
  int fd = connect_to(port);
  send_all(fd, raw);
  std::string out = read_all(fd);
  ::close(fd);
  return out;
}

int status_of(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 9, "HTTP/1.1 ") != 0) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string body_of(const std::string& response) {
  auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : response.substr(at + 4);
}

bool has_header(const std::string& response, const std::string& line) {
  auto head = response.substr(0, response.find("\r\n\r\n") + 2);
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

// Runs the server on a fresh loop while `client` talks to it from a thread; then closes
// every handle and checks that the loop closes cleanly.
void with_server(FakeAdmin& admin, const std::function<void(uint16_t)>& client,
                 const std::function<void(AdminServer&)>& configure = {}) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    AdminServer server(&loop, admin);
    admin.server = &server;
    if (configure) configure(server);
    REQUIRE(server.listen("127.0.0.1", 0) == "");
    REQUIRE(server.port() != 0);

    uv_async_t done;
    done.data = &server;
    uv_async_init(&loop, &done, [](uv_async_t* a) {
      static_cast<AdminServer*>(a->data)->close();
      uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
    });
    uint16_t port = server.port();
    std::thread t([&] {
      client(port);
      uv_async_send(&done);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    t.join();
    CHECK(server.connections() == 0);
    CHECK_FALSE(server.listening());
    admin.server = nullptr;
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // close callbacks of anything the destructor closed
  CHECK(uv_loop_close(&loop) == 0);
}

}  // namespace

TEST_CASE("AdminServer: GET answered by the handler, then closed", "[admin_http]") {
  FakeAdmin admin;
  std::string resp;
  with_server(admin, [&](uint16_t port) {
    resp = request(port, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
  });
  CHECK(status_of(resp) == 200);
  CHECK(resp.compare(0, 17, "HTTP/1.1 200 OK\r\n") == 0);
  CHECK(has_header(resp, "Content-Type: text/plain; charset=utf-8"));
  CHECK(has_header(resp, "Content-Length: 3"));
  CHECK(has_header(resp, "Connection: close"));
  CHECK(body_of(resp) == "ok\n");
  CHECK(admin.calls == std::vector<std::string>{"GET /healthz"});
}

TEST_CASE("AdminServer: several requests, one per connection", "[admin_http]") {
  FakeAdmin admin;
  std::vector<std::string> r;
  with_server(admin, [&](uint16_t port) {
    r.push_back(request(port, "GET /nope HTTP/1.1\r\n\r\n"));
    r.push_back(request(port, "POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
    r.push_back(request(port, "PUT /healthz HTTP/1.1\r\n\r\n"));
    r.push_back(request(port, "DELETE /bans/2001:db8::1 HTTP/1.1\r\n\r\n"));
    r.push_back(request(port, "GET /bans?format=json HTTP/1.0\r\n\r\n"));
    r.push_back(request(port, "GET /healthz HTTP/1.0\n\n"));  // bare LF line ends
  });
  REQUIRE(r.size() == 6);
  CHECK(status_of(r[0]) == 404);
  CHECK(r[0].compare(0, 24, "HTTP/1.1 404 Not Found\r\n") == 0);
  CHECK(body_of(r[0]) == "not found\n");
  // A path that exists but not for this method: the handler says which methods it takes.
  CHECK(status_of(r[1]) == 405);
  CHECK(has_header(r[1], "Allow: GET"));
  // A method the server does not serve at all never reaches the handler.
  CHECK(status_of(r[2]) == 405);
  CHECK(has_header(r[2], "Allow: GET, POST, DELETE"));
  CHECK(status_of(r[3]) == 200);
  CHECK(body_of(r[3]) == "unbanned\n");
  CHECK(status_of(r[4]) == 200);
  CHECK(has_header(r[4], "Content-Type: application/json"));
  CHECK(body_of(r[4]) == R"({"bans":[]})");
  CHECK(status_of(r[5]) == 200);
  CHECK(admin.calls == std::vector<std::string>{"GET /nope", "POST /healthz",
                                                "DELETE /bans/2001:db8::1", "GET /bans",
                                                "GET /healthz"});
}

TEST_CASE("AdminServer: a request that arrives byte by byte", "[admin_http]") {
  FakeAdmin admin;
  std::string resp;
  with_server(admin, [&](uint16_t port) {
    int fd = connect_to(port);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (char c : req) {
      send_all(fd, std::string_view(&c, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    resp = read_all(fd);
    ::close(fd);
  });
  CHECK(status_of(resp) == 200);
  CHECK(body_of(resp) == "ok\n");
}

TEST_CASE("AdminServer: malformed and unsupported requests", "[admin_http]") {
  FakeAdmin admin;
  std::vector<std::string> r;
  with_server(admin, [&](uint16_t port) {
    r.push_back(request(port, "GET\r\n\r\n"));
    r.push_back(request(port, "GET  /healthz HTTP/1.1\r\n\r\n"));
    r.push_back(request(port, "GET healthz HTTP/1.1\r\n\r\n"));
    r.push_back(request(port, "GET /healthz HTTP/2.0\r\n\r\n"));
    r.push_back(request(port, "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n"));
    r.push_back(request(port, "GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n"));
    r.push_back(request(port, "POST /reload HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
    r.push_back(request(port, "POST /reload HTTP/1.1\r\nContent-Length: x\r\n\r\n"));
    r.push_back(
        request(port, "POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
  });
  REQUIRE(r.size() == 9);
  CHECK(status_of(r[0]) == 400);
  CHECK(status_of(r[1]) == 400);
  CHECK(status_of(r[2]) == 400);
  CHECK(status_of(r[3]) == 505);
  CHECK(status_of(r[4]) == 400);
  CHECK(status_of(r[5]) == 400);
  CHECK(status_of(r[6]) == 413);
  CHECK(status_of(r[7]) == 400);
  CHECK(status_of(r[8]) == 501);
  CHECK(admin.calls.empty());
}

TEST_CASE("AdminServer: a request head over 8 KiB gets 431", "[admin_http]") {
  FakeAdmin admin;
  std::string big, exact;
  with_server(admin, [&](uint16_t port) {
    std::string filler(AdminServer::kMaxRequestHead, 'a');
    big = request(port, "GET /healthz HTTP/1.1\r\nX-Filler: " + filler + "\r\n\r\n");
    // A head of exactly the limit is still served.
    std::string start = "GET /healthz HTTP/1.1\r\nX-Filler: ";
    std::string end = "\r\n\r\n";
    std::string fits(AdminServer::kMaxRequestHead - start.size() - end.size(), 'b');
    exact = request(port, start + fits + end);
  });
  CHECK(status_of(big) == 431);
  CHECK(body_of(big) == "Request Header Fields Too Large\n");
  CHECK(status_of(exact) == 200);
  CHECK(admin.calls == std::vector<std::string>{"GET /healthz"});
}

TEST_CASE("AdminServer: a client that keeps sending gets its 431 and is cut off", "[admin_http]") {
  FakeAdmin admin;
  std::string resp;
  with_server(admin, [&](uint16_t port) {
    int fd = connect_to(port);
    // Far more than the head limit and never an empty line: the server answers early,
    // drains what keeps coming, and the reply must not be lost to a reset.
    std::string chunk(64 * 1024, 'x');
    for (int i = 0; i < 4; ++i) send_all(fd, chunk);
    resp = read_all(fd);
    ::close(fd);
  });
  CHECK(status_of(resp) == 431);
}

TEST_CASE("AdminServer: a request not completed in time gets 408", "[admin_http]") {
  FakeAdmin admin;
  std::string resp;
  auto started = std::chrono::steady_clock::now();
  with_server(
      admin,
      [&](uint16_t port) {
        int fd = connect_to(port);
        send_all(fd, "GET /healthz HTTP/1.1\r\n");  // and then nothing
        resp = read_all(fd);
        ::close(fd);
      },
      [](AdminServer& s) {
        s.set_timeouts(std::chrono::milliseconds(200), std::chrono::milliseconds(200));
      });
  CHECK(status_of(resp) == 408);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(4));
  CHECK(admin.calls.empty());
}

TEST_CASE("AdminServer: at most 64 connections at once", "[admin_http]") {
  FakeAdmin admin;
  std::string extra, later;
  with_server(admin, [&](uint16_t port) {
    std::vector<int> idle;
    for (size_t i = 0; i < AdminServer::kMaxConnections; ++i) idle.push_back(connect_to(port));
    // The 65th is accepted and closed at once, with no reply.
    int fd = connect_to(port);
    extra = read_all(fd);
    ::close(fd);
    for (int s : idle) ::close(s);
    // Slots free up again once the idle clients have gone (the server may take a moment).
    for (int attempt = 0; attempt < 100; ++attempt) {
      later = request(port, "GET /healthz HTTP/1.1\r\n\r\n");
      if (!later.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  CHECK(extra.empty());
  CHECK(status_of(later) == 200);
}

TEST_CASE("AdminServer: a client that disconnects mid-request", "[admin_http]") {
  FakeAdmin admin;
  std::string resp;
  with_server(admin, [&](uint16_t port) {
    int fd = connect_to(port);
    send_all(fd, "GET /hea");
    ::close(fd);
    resp = request(port, "GET /healthz HTTP/1.1\r\n\r\n");
  });
  CHECK(status_of(resp) == 200);
  CHECK(admin.calls == std::vector<std::string>{"GET /healthz"});
}

TEST_CASE("AdminServer: a handler may close the server", "[admin_http]") {
  FakeAdmin admin;
  std::string resp;
  with_server(admin, [&](uint16_t port) { resp = request(port, "POST /close HTTP/1.1\r\n\r\n"); });
  // The connection went down with the server: no reply, and nothing leaked (loop closes).
  CHECK(resp.empty());
  CHECK(admin.calls == std::vector<std::string>{"POST /close"});
}

TEST_CASE("AdminServer: listen errors are reported", "[admin_http]") {
  FakeAdmin admin;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    AdminServer a(&loop, admin);
    AdminServer b(&loop, admin);
    CHECK(a.listen("not-an-ip", 0).find("not an IP address") != std::string::npos);
    REQUIRE(a.listen("127.0.0.1", 0) == "");
    CHECK(a.listen("127.0.0.1", 0).find("already listening") != std::string::npos);
    std::string err = b.listen("127.0.0.1", a.port());
    CHECK(err.find("address already in use") != std::string::npos);
    CHECK_FALSE(b.listening());
    a.close();
    a.close();  // twice is fine
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
