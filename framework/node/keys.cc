#include "framework/node/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "mpx/errors.h"

namespace mpx {
namespace node {

std::string ClusterKey::text() const {
  std::string out =
      "# mpx cluster key: whoever reads this file can join the cluster. Keep it 0600.\n";
  out += "router-public " + router.public_key + "\n";
  out += "router-secret " + router.secret_key + "\n";
  out += "agent-public " + agent.public_key + "\n";
  out += "agent-secret " + agent.secret_key + "\n";
  for (const auto& k : authorized) {
    if (k != agent.public_key) out += "authorized " + k + "\n";
  }
  return out;
}

ClusterKey ClusterKey::load(const std::string& path, bool create) {
  const std::string where = "cluster key file '" + path + "'";
  if (create) {
    ClusterKey fresh;
    fresh.router = new_keypair();
    fresh.agent = new_keypair();
    fresh.authorized.insert(fresh.agent.public_key);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
      const std::string text = fresh.text();
      const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      ::close(fd);
      if (!ok) throw Error("mpx: cannot write " + where + ": " + std::strerror(errno));
      return fresh;
    }
    if (errno != EEXIST) throw Error("mpx: cannot create " + where + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error("mpx: cannot read " + where + ": " + std::strerror(errno) +
                (create ? "" : " (copy the pool's key file to this host)"));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error("mpx: " + where + " may be read by others (mode " + mode + "): run chmod 600 " + path);
  }
  std::ifstream in(path);
  if (!in) throw Error("mpx: cannot read " + where + ": " + std::strerror(errno));
  ClusterKey key;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string name, value;
    words >> name >> value;
    const std::string what = where + " line " + std::to_string(number) + " (" + name + ")";
    z85_decode(value, what.c_str());  // checks it
    if (name == "router-public") key.router.public_key = value;
    else if (name == "router-secret") key.router.secret_key = value;
    else if (name == "agent-public") key.agent.public_key = value;
    else if (name == "agent-secret") key.agent.secret_key = value;
    else if (name == "authorized") key.authorized.insert(value);
    else throw Error("mpx: " + where + " line " + std::to_string(number) + ": unknown entry '" + name + "'");
  }
  if (key.router.public_key.empty() || key.agent.public_key.empty() || key.agent.secret_key.empty()) {
    throw Error("mpx: " + where + " lacks router-public, agent-public or agent-secret");
  }
  key.authorized.insert(key.agent.public_key);
  return key;
}

}  // namespace node
}  // namespace mpx
