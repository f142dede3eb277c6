#include "proxy/backend_probe.h"

namespace smtpgate {

void BackendProbe::stop() {
  conn_.reset();
  timer_.reset();
  running_ = false;
}

void BackendProbe::probe() {
  if (!timer_) timer_ = Timer::create(loop_, this);
  running_ = true;
  last_probe_ms_ = uv_now(loop_);
  parser_.reset();
  conn_ = Connection::create(loop_, this);
  timer_->start(kTimeout);
  if (int rc = conn_->connect(reinterpret_cast<const sockaddr*>(&addr_)); rc != 0)
    done(false, std::string("connect: ") + uv_strerror(rc));
}

void BackendProbe::on_connected(Connection&, int status) {
  if (status != 0) {
    done(false, std::string("connect: ") + uv_strerror(status));
    return;
  }
  conn_->start_reading();
}

void BackendProbe::on_data(Connection&, std::string_view data) {
  auto r = parser_.feed(data);
  if (r.status == smtp::ReplyParser::Status::NeedMore) return;
  if (r.status == smtp::ReplyParser::Status::Error) {
    done(false, "malformed greeting: " + std::string(parser_.error()));
    return;
  }
  const auto& reply = parser_.reply();
  if (reply.code != 220) {
    done(false, "greeting: " + std::string(smtp::first_line(reply.raw)));
    return;
  }
  conn_->write("QUIT\r\n");
  conn_->flush();
  done(true, {});
}

void BackendProbe::on_eof(Connection&, int status) {
  done(false, status == UV_EOF ? std::string("closed before its greeting")
                               : std::string(uv_strerror(status)));
}

void BackendProbe::on_timer(Timer&) {
  if (running_) done(false, "no greeting within " + std::to_string(kTimeout.count() / 1000) + " s");
}

void BackendProbe::done(bool ok, std::string why) {
  conn_.reset();  // after QUIT was queued: the close follows it
  running_ = false;
  probed_ = true;
  ok_ = ok;
  if (!ok) last_error_ = std::move(why);
  if (timer_) timer_->stop();
}

std::string BackendProbe::check(uint64_t now_ms) {
  const uint64_t age = now_ms - last_probe_ms_;
  const auto interval = static_cast<uint64_t>(kInterval.count());
  // A result this old says nothing about now (nobody asked for a while): probe, and say so.
  const bool stale = probed_ && !running_ && age >= 3 * interval;
  if (!running_ && (!probed_ || age >= interval)) probe();
  if (!probed_) return "backend not probed yet (a probe is under way: ask again in a moment)";
  if (stale)
    return "backend last probed " + std::to_string(age / 1000) +
           " s ago (a probe is under way: ask again in a moment)";
  return ok_ ? std::string() : "backend: " + last_error_;
}

}  // namespace smtpgate
