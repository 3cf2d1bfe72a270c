#!/usr/bin/env bash
# Submit one of the project's Ray jobs to a running cluster, from the repository root:
#
#   cluster/submit.sh finetune --task denoise --train-images s3://B/train/ --val-images s3://B/val/ \
#       --steps 3000 --workers 4 --use-gpu --storage s3://B/runs --name my-denoiser
#   cluster/submit.sh restore --input s3://B/scans/ --output s3://B/restored/ --task denoise \
#       --model s3://B/runs/my-denoiser/model
#
# It runs `ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.JOB ARGS`.
#
# Environment:
#   RAY_ADDRESS    the cluster's dashboard (default http://127.0.0.1:8265, which is where
#                  `ray dashboard cluster/aws.yaml` or `kubectl port-forward svc/...-head-svc 8265`
#                  put it)
#   RAY_AUTH_TOKEN the cluster's token when it has token auth (Ray >= 2.52), unless it is in
#                  ~/.ray/auth_token (either one sets RAY_AUTH_MODE=token for the client)
#   SUBMISSION_ID  the job's id (default JOB-YYYYmmdd-HHMMSS); `ray job logs/status/stop ID`
#   NO_WAIT=1      return once submitted instead of following the logs until the job ends
#   WORKING_DIR    the job's --working-dir (default `.`, uploaded to the cluster); a
#                  local:///path that every node already has is used in place
#
# Exit status: that of `ray job submit` -- 0 when the job succeeded, 1 when it failed, 2 on usage.
set -euo pipefail

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
}

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    usage
    exit 2
fi
job="$1"
shift
case "$job" in
    finetune | restore) ;;
    *)
        echo "submit.sh: unknown job '$job'; choose finetune or restore" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/.."
if [[ ! -f "jobs/$job.py" ]]; then
    echo "submit.sh: jobs/$job.py not found in $(pwd)" >&2
    exit 2
fi

# Ray >= 2.52 clients send the cluster's token only in token mode; a cluster without token auth
# ignores it, so turn the mode on whenever a token is at hand.
if [[ -z "${RAY_AUTH_MODE:-}" && ( -n "${RAY_AUTH_TOKEN:-}" || -n "${RAY_AUTH_TOKEN_PATH:-}" || -f "$HOME/.ray/auth_token" ) ]]; then
    export RAY_AUTH_MODE=token
fi

submission_id="${SUBMISSION_ID:-$job-$(date +%Y%m%d-%H%M%S)}"
wait_flag=()
if [[ "${NO_WAIT:-0}" == "1" ]]; then
    wait_flag=(--no-wait)
fi

exec ray job submit \
    --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" \
    --submission-id "$submission_id" \
    --working-dir "${WORKING_DIR:-.}" \
    --runtime-env cluster/runtime_env.yaml \
    "${wait_flag[@]}" \
    -- python -m "jobs.$job" "$@"
