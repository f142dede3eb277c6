#include "proxy/backend_probe.h"

namespace smtpgate {

void BackendProbe::start(const sockaddr_storage& addr) {
  addr_ = addr;
  if (!timer_) timer_ = Timer::create(loop_, this);
  probe();
}

void BackendProbe::stop() {
  conn_.reset();
  timer_.reset();
  running_ = false;
}

void BackendProbe::probe() {
  running_ = true;
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
  if (running_) {
    done(false, "no greeting within " + std::to_string(kTimeout.count() / 1000) + " s");
    return;
  }
  probe();
}

void BackendProbe::done(bool ok, std::string why) {
  conn_.reset();  // after QUIT was queued: the close follows it
  running_ = false;
  probed_ = true;
  ok_ = ok;
  if (ok) {
    last_ok_ms_ = uv_now(loop_);
  } else {
    last_error_ = std::move(why);
  }
  if (timer_) timer_->start(kInterval);
}

std::string BackendProbe::not_ready(uint64_t now_ms) const {
  if (!probed_) return last_error_;
  if (!ok_) return "backend: " + last_error_;
  if (now_ms - last_ok_ms_ > 3 * static_cast<uint64_t>(kInterval.count()))
    return "backend: no probe answered for " + std::to_string((now_ms - last_ok_ms_) / 1000) + " s";
  return {};
}

}  // namespace smtpgate
