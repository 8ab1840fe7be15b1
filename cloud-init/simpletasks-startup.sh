#!/bin/bash
# Start-up script of a simpletasks worker VM (Debian 12, Ubuntu 24.04 or another image with
# Python >= 3.11, systemd and curl), run as root. It
#   1. installs simpletasks into the venv /opt/simpletasks from `simpletasks-package`, a pip
#      requirement or wheel URL read from the instance metadata (for example
#      https://example.org/simpletasks-0.1.0-py3-none-any.whl, or a package of yours that
#      depends on simpletasks), with the extras in `simpletasks-extras` (default: gcp on GCE,
#      aws on EC2);
#   2. writes the systemd unit simpletasks@.service (a copy of cloud-init/simpletasks@.service)
#      and starts simpletasks@FLAVOUR, that is `simpletasks run --from-metadata FLAVOUR`,
#      which reads its queues and bucket from the instance metadata (docs/deploy.md).
#
# GCE: give this file as the `startup-script` metadata; FLAVOUR is gce. It runs at every boot
#      and reinstalls only when `simpletasks-package` or the unit changed.
# EC2: cloud-init/worker-ec2.yaml embeds this file and runs it once, as `... ec2`; the
#      instance must expose its tags in the instance metadata.
#
# Status: checked here with bash -n and shellcheck; the unit's command is what
# tests/integration/test_startup.py runs. The script itself was not run on a real VM.
set -euo pipefail
shopt -s inherit_errexit

FLAVOUR="${1:-gce}"
PREFIX=/opt/simpletasks
UNIT_FILE=/etc/systemd/system/simpletasks@.service
SERVICE="simpletasks@${FLAVOUR}.service"
GCE_HOST="${GCE_METADATA_HOST:-metadata.google.internal}"
EC2_ENDPOINT="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}"

say() { echo "simpletasks-startup: $*" >&2; }
die() { say "$*"; exit 1; }

# fetch CURL_ARGS...: print the body, a newline and the HTTP status; die if nothing answers.
fetch() {
  curl -sS --retry 5 --retry-connrefused --retry-delay 2 --max-time 5 -w '\n%{http_code}' "$@" ||
    die "the $FLAVOUR metadata server does not answer"
}

# metadata NAME: print the GCE attribute NAME (the instance's, else the project's) or the EC2
# instance tag NAME; print nothing if it is not set.
metadata() {
  local reply token scope
  case "$FLAVOUR" in
    gce)
      for scope in instance project; do
        reply=$(fetch -H 'Metadata-Flavor: Google' \
          "http://$GCE_HOST/computeMetadata/v1/$scope/attributes/$1")
        case "${reply##*$'\n'}" in
          200) printf '%s' "${reply%$'\n'*}"; return ;;
          404) ;;
          *) die "GCE metadata server answered HTTP ${reply##*$'\n'} for attribute $1" ;;
        esac
      done
      ;;
    ec2)
      token=$(curl -fsS --retry 5 --retry-connrefused --retry-delay 2 --max-time 5 -X PUT \
        -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$EC2_ENDPOINT/latest/api/token") ||
        die "no IMDSv2 token from $EC2_ENDPOINT"
      reply=$(fetch -H "X-aws-ec2-metadata-token: $token" \
        "$EC2_ENDPOINT/latest/meta-data/tags/instance/$1")
      case "${reply##*$'\n'}" in
        200) printf '%s' "${reply%$'\n'*}" ;;
        404) ;;
        *) die "EC2 metadata service answered HTTP ${reply##*$'\n'} for tag $1" ;;
      esac
      ;;
    *) die "usage: $0 [gce|ec2]" ;;
  esac
}

main() {
  local changed=0 unit package extras python cache installed
  package=$(metadata simpletasks-package)
  [ -n "$package" ] || die "set the $FLAVOUR metadata value 'simpletasks-package' to a pip" \
    "requirement or wheel URL (on EC2: an instance tag, with instance metadata tags enabled)"
  extras=$(metadata simpletasks-extras)
  [ -n "$extras" ] || extras=$([ "$FLAVOUR" = ec2 ] && echo aws || echo gcp)
  extras=${extras// /,}  # EC2 tag values cannot hold commas: "gcp aws" means gcp,aws
  [[ "$extras" =~ ^[a-z0-9_,-]+$ ]] || die "simpletasks-extras must be extras such as: gcp aws"

  python=$(command -v python3) || die "python3 not found: use an image with Python >= 3.11"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$("$python" --version) is too old: simpletasks needs Python >= 3.11"
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    command -v apt-get >/dev/null || die "$python cannot create a venv; install its venv module"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
  fi

  id -u simpletasks >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin simpletasks

  # The package source is not logged: a wheel URL may carry a token.
  installed=$(cat "$PREFIX/.simpletasks-package" 2>/dev/null || true)
  if [ "$installed" != "${package} [${extras}]" ]; then
    say "installing simpletasks-package into $PREFIX"
    systemctl stop "$SERVICE" 2>/dev/null || true
    rm -rf "$PREFIX"
    "$python" -m venv "$PREFIX"
    "$PREFIX/bin/pip" install --quiet --no-cache-dir --upgrade pip
    # pip merges the two: the package from the given source, with simpletasks' extras.
    "$PREFIX/bin/pip" install --quiet --no-cache-dir "$package" "simpletasks[$extras]"
    printf '%s' "${package} [${extras}]" >"$PREFIX/.simpletasks-package"
    chmod 600 "$PREFIX/.simpletasks-package"
    changed=1
  fi
  "$PREFIX/bin/simpletasks" --version

  cache=$(metadata cache-directory)
  if [ -n "$cache" ]; then
    install -d -o simpletasks -g simpletasks -m 0750 "$cache"
  fi

  unit=$(mktemp)
  cat >"$unit" <<'UNIT'
# systemd template unit for a simpletasks worker: simpletasks@gce.service on Google Compute
# Engine, simpletasks@ec2.service on EC2 (%i is the flavour given to --from-metadata).
# The worker reads its queues, bucket and settings from the instance metadata (GCE instance
# attributes or EC2 instance tags, see docs/deploy.md); credentials come from the instance's
# service account or role. The Environment= lines below are fallbacks: a value in metadata
# wins over them. On SIGTERM (shutdown, preemption, spot interruption) the worker stops
# taking tasks, gives running ones SIMPLETASKS_GRACE_SECONDS to finish, releases the rest
# and exits 0; TimeoutStopSec leaves room for that before systemd sends SIGKILL.
# simpletasks-startup.sh embeds a copy of this file; tests/integration/test_startup.py checks
# that the copies match and runs this ExecStart.
[Unit]
Description=simpletasks worker (configuration from %i instance metadata)
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=exec
User=simpletasks
Group=simpletasks
CacheDirectory=simpletasks
Environment=SIMPLETASKS_CACHE_DIR=/var/cache/simpletasks
Environment=SIMPLETASKS_GRACE_SECONDS=20
Environment=PYTHONUNBUFFERED=1
ExecStart=/opt/simpletasks/bin/simpletasks run --from-metadata %i
Restart=on-failure
RestartSec=10
KillSignal=SIGTERM
TimeoutStopSec=45
NoNewPrivileges=yes
PrivateTmp=yes
StandardOutput=journal
StandardError=journal
SyslogIdentifier=simpletasks

[Install]
WantedBy=multi-user.target
UNIT
  if ! cmp -s "$unit" "$UNIT_FILE"; then
    install -m 0644 "$unit" "$UNIT_FILE"
    changed=1
  fi
  rm -f "$unit"
  systemctl daemon-reload
  systemctl enable "$SERVICE"
  if [ "$changed" = 1 ]; then
    systemctl restart "$SERVICE"
  else
    systemctl start "$SERVICE"
  fi
  say "started $SERVICE (journalctl -u $SERVICE)"
}

# Run when executed; when sourced (as the tests do), only define the functions.
if ! (return 0 2>/dev/null); then
  main "$@"
fi
