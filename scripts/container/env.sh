# shellcheck shell=bash
# Private podman storage and configuration under the project's ignored .container/ folder, so
# nothing touches the machine's container defaults. Source this file; it needs ROOT set to the
# repository root. Settings are the ones recorded as working on these machines (runc, cgroupfs,
# lowered ulimits, host network namespace, file event log: no systemd).

CONTAINER_DIR="${CONTAINER_DIR:-$ROOT/.container}"
mkdir -p "$CONTAINER_DIR"/{storage,run,tmp}

cat >"$CONTAINER_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$CONTAINER_DIR/storage"
runroot = "$CONTAINER_DIR/run"
CONF

cat >"$CONTAINER_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$CONTAINER_DIR/run/events.log"
tmp_dir = "$CONTAINER_DIR/tmp"
CONF

export CONTAINERS_STORAGE_CONF="$CONTAINER_DIR/storage.conf"
export CONTAINERS_CONF="$CONTAINER_DIR/containers.conf"
# buildah (podman build) keeps its scratch files here instead of /var/tmp
export TMPDIR="$CONTAINER_DIR/tmp"
