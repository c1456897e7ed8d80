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

namespace {

// Creates the directories leading to path that are missing, 0700 (as ssh-keygen makes
// ~/.ssh): a fresh account's $HOME/.mpx/cluster.key works as written.
void make_parents(const std::string& path, const std::string& where) {
  for (std::size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    const std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      throw Error("mpx: cannot create the directory " + dir + " for " + where + ": " + std::strerror(errno));
    }
  }
}

// Writes text to path whole, or not at all: into a file of its own first, then linked
// in place, so an agent waiting for the file never reads half of it. false when path
// exists already (another pool made it first).
bool publish(const std::string& path, const std::string& text, const std::string& where) {
  const std::string temp = path + ".new-" + std::to_string(::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw Error("mpx: cannot create " + where + ": " + std::strerror(errno));
  const ssize_t n = ::write(fd, text.data(), text.size());
  const bool written = n == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  const int write_error = n >= 0 && n < static_cast<ssize_t>(text.size()) ? ENOSPC : errno;
  ::close(fd);
  if (!written) {
    ::unlink(temp.c_str());
    throw Error("mpx: cannot write " + where + ": " + std::strerror(write_error));
  }
  const int linked = ::link(temp.c_str(), path.c_str());
  const int link_error = errno;
  ::unlink(temp.c_str());
  if (linked == 0) return true;
  if (link_error == EEXIST) return false;
  throw Error("mpx: cannot create " + where + ": " + std::strerror(link_error));
}

}  // namespace

ClusterKey ClusterKey::load(const std::string& path, bool create) {
  const std::string where = "cluster key file '" + path + "'";
  if (create && ::access(path.c_str(), F_OK) != 0) {
    ClusterKey fresh;
    fresh.router = new_keypair();
    fresh.agent = new_keypair();
    fresh.authorized.insert(fresh.agent.public_key);
    make_parents(path, where);
    if (publish(path, fresh.text(), where)) return fresh;
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
