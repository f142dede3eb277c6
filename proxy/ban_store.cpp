#include "proxy/ban_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace smtpgate {

std::string read_ban_state(const std::string& path, BanList* bans) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errno == ENOENT ? "" : "cannot read ban state " + path + ": " + std::strerror(errno);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string problem;
  auto doc = nlohmann::json::parse(ss.str(), nullptr, false);
  if (doc.is_discarded()) {
    problem = "not valid JSON";
  } else {
    problem = bans->from_json(doc);
  }
  if (problem.empty()) return {};
  std::string aside = path + ".corrupt-" + std::to_string(std::time(nullptr));
  std::rename(path.c_str(), aside.c_str());
  return "ban state " + path + " is corrupt (" + problem + "); moved to " + aside +
         ", starting with no bans";
}

std::string write_ban_state(const std::string& path, const BanList& bans) {
  std::string data = bans.to_json().dump(1) + "\n";
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return "cannot write " + tmp + ": " + std::strerror(errno);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = "cannot write " + tmp + ": " + std::strerror(errno);
      ::close(fd);
      return err;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    std::string err = "fsync " + tmp + ": " + std::strerror(errno);
    ::close(fd);
    return err;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return "rename " + tmp + ": " + std::strerror(errno);
  std::string dir =
      path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/'));
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

}  // namespace smtpgate
