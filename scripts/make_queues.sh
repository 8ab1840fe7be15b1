#!/usr/bin/env bash
# Create the queues and the bucket a simpletasks job needs: a thin wrapper of `simpletasks create`
# (works on AWS, and on the local stack after `set -a; . ./simpletasks-local.env; set +a`).
# Usage: make_queues.sh PREFIX BUCKET  ->  sqs://PREFIX-tasks, sqs://PREFIX-errors, sqs://PREFIX-done, s3://BUCKET
set -euo pipefail
prefix=${1:?usage: make_queues.sh PREFIX BUCKET}
bucket=${2:?usage: make_queues.sh PREFIX BUCKET}
exec simpletasks create "sqs://$prefix-tasks" "sqs://$prefix-errors" "sqs://$prefix-done" \
  --bucket "s3://$bucket"
