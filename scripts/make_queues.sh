#!/usr/bin/env bash
# Create the SQS queues and the S3 bucket a simpletasks job needs (uses the aws CLI).
# Usage: make_queues.sh PREFIX BUCKET   ->  PREFIX-tasks, PREFIX-errors, PREFIX-done, s3://BUCKET
set -euo pipefail
prefix=${1:?usage: make_queues.sh PREFIX BUCKET}
bucket=${2:?usage: make_queues.sh PREFIX BUCKET}
for q in tasks errors done; do
  aws sqs create-queue --queue-name "$prefix-$q" --attributes VisibilityTimeout=60 >/dev/null
  echo "sqs://$prefix-$q"
done
aws s3 mb "s3://$bucket" >/dev/null && echo "s3://$bucket"
