# Shared by tools/cluster/up and tools/cluster/down (sourced, not run).
#
# The local Slurm cluster lives in one place, so there is one at a time on a machine:
#   /run/mpx-cluster/      slurm.conf, munge key and socket, state, spool, log/
#   slot 0 of tools/cluster/netns: bridge mpx0br at 10.231.0.1 (slurmctld, and any
#                          router of the test), node K in namespace mpx0hK at
#                          10.231.0.(K+1), its slurmd on port 6920+K
#   /run/mpx-netns/0.lock  held (flock) by up/down while they run, and by
#                          framework/testing's SlurmCluster for its whole lifetime.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

cluster_dir=/run/mpx-cluster
cluster_lock=/run/mpx-netns/0.lock
cluster_tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
slurmctld_port=6917

die() { echo "cluster: $*" >&2; exit 1; }

# Takes the cluster lock on fd 9, waiting up to MPX_CLUSTER_LOCK_WAIT seconds (300).
# A caller that already holds it passes it down as fd 9 (the same open file, so this
# flock succeeds at once): SlurmCluster does, and up does for down.
take_cluster_lock() {
  mkdir -p "$(dirname "$cluster_lock")"
  if ! [[ -e /proc/$$/fd/9 && /proc/$$/fd/9 -ef "$cluster_lock" ]]; then
    exec 9>>"$cluster_lock"
  fi
  local wait="${MPX_CLUSTER_LOCK_WAIT:-300}"
  if ! flock -n 9; then
    echo "cluster: waiting up to ${wait} s for the cluster lock $cluster_lock" \
      "(held by: $(head -c 100 "$cluster_lock" 2>/dev/null))" >&2
    flock -w "$wait" 9 || die "another session still holds $cluster_lock after ${wait} s"
  fi
}

# Prints the missing prerequisite, if any (empty when all is there).
cluster_missing() {
  [[ "$(id -u)" -eq 0 ]] || { echo "not root (uid $(id -u)): the cluster needs root"; return; }
  local c
  for c in munged munge slurmctld slurmd srun sinfo scontrol; do
    command -v "$c" >/dev/null ||
      { echo "'$c' not found: run tools/install-deps (slurmctld slurmd slurm-client munge)"; return; }
  done
  "$cluster_tools/netns" check || true
}
