#!/usr/bin/env bash
# Train the shipped default models with the project's own fine-tuning job and install them
# (float16) into restoration/weights/<task>/. The denoiser is trained first; JPEG and inpainting
# start from it (--init, task transfer), SR from ImageNet. Training images: CBSD432 only.
#
#   jobs/train_defaults.sh DATA_DIR [STORAGE] [TASKS...]
#
# DATA_DIR holds train/CBSD432 and val/{Set14_SRF4_HR,CBSD68}. Validation during training uses a
# set the task's card numbers are not reported on (Set14 for denoising and inpainting, CBSD68 for
# SR and JPEG), and the exported model is the last step, not the best validation checkpoint.
# Re-running resumes unfinished runs; finished runs are exported again.
# WORKERS / CPUS_PER_WORKER / USE_GPU (1) set the Ray Train scaling (default: 1 worker, 2 CPUs).
set -euo pipefail

data=$(cd "${1:?usage: jobs/train_defaults.sh DATA_DIR [STORAGE] [TASKS...]}" && pwd)
storage=$(mkdir -p "${2:-runs}" && cd "${2:-runs}" && pwd)
shift $(( $# >= 2 ? 2 : 1 ))
tasks=("$@")
(( ${#tasks[@]} )) || tasks=(denoise sr jpeg inpaint)

scaling=(--workers "${WORKERS:-1}" --cpus-per-worker "${CPUS_PER_WORKER:-2}")
[[ "${USE_GPU:-0}" == 1 ]] && scaling+=(--use-gpu)
here=$(cd "$(dirname "$0")/.." && pwd)

declare -A val=([denoise]=Set14_SRF4_HR [sr]=CBSD68 [jpeg]=CBSD68 [inpaint]=Set14_SRF4_HR)
# SR starts from ImageNet, not from the denoiser: on smooth bicubic inputs the denoiser's decoder
# features are all zero (ReLU), no gradient reaches the network and the loss stays flat.
declare -A from_denoiser=([jpeg]=1 [inpaint]=1)
for task in "${tasks[@]}"; do
    init=()
    [[ -n "${from_denoiser[$task]:-}" ]] && init=(--init "$storage/default-denoise/model")
    restoration finetune --task "$task" --train-images "$data/train/CBSD432" \
        --val-images "$data/val/${val[$task]}" "${scaling[@]}" \
        --storage "$storage" --name "default-$task" --config "$here/jobs/configs/$task.yaml" "${init[@]}"
    restoration export "$storage/default-$task/model" --as-default
done
