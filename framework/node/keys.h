// The cluster key file: one file, mode 0600, holding the router's CURVE keypair, the
// keypair agents use, and any further agent public keys the router admits.
//
//   # mpx cluster key: whoever reads this file can join the cluster. Keep it 0600.
//   router-public <Z85>
//   router-secret <Z85>
//   agent-public <Z85>
//   agent-secret <Z85>
//   authorized <Z85>        (zero or more: agents with keypairs of their own)
//
// Copy it to every host (or share it on the cluster's file system): the router reads
// the router-* and every agent public key, an agent the router-public and its agent-*
// lines. A file that others may read is refused, naming the chmod that fixes it.
#ifndef MPX_FRAMEWORK_NODE_KEYS_H_
#define MPX_FRAMEWORK_NODE_KEYS_H_

#include <set>
#include <string>

#include "framework/node/zmq.h"

namespace mpx {
namespace node {

struct ClusterKey {
  Keypair router;
  Keypair agent;
  std::set<std::string> authorized;  // Z85 public keys the router admits (agent's included)

  // Reads path; with create, writes a new one (0600, and the directories to it that are
  // missing, 0700) when there is none, whole or not at all. Throws mpx::Error naming
  // the file and what is wrong with it.
  static ClusterKey load(const std::string& path, bool create);
  // The file's text.
  std::string text() const;
};

}  // namespace node
}  // namespace mpx

#endif  // MPX_FRAMEWORK_NODE_KEYS_H_
