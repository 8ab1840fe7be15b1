#!/usr/bin/env bash
# Install what the test suite needs and run it: the README's test command, and what .ci/run
# calls. Arguments go to pytest (e.g. `bash scripts/test.sh -m slow`).
#
# As root on Debian it installs the system packages some tests drive (Chromium for the
# browser test, ClamAV for the upload scan, OpenSSH's server for the ssh fleet) if they are
# missing, and starts the machine's PostgreSQL if it is installed but down. Elsewhere those
# tests skip with the reason (under CI=true they fail instead). The tests start every other
# service they use on 127.0.0.1 themselves (moto, fake-gcs-server, the Pub/Sub emulator,
# RabbitMQ if installed but down).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v clamscan >/dev/null || missing+=(clamav)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL" >&2
  for version in /etc/postgresql/*/; do
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
  done
fi

python3 -m pip install -q -e '.[dev]'
exec python3 -m pytest "$@"
