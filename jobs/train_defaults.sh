#!/usr/bin/env bash
# Train the shipped default models with the project's own fine-tuning job and install them
# (float16) into restoration/weights/<task>/. Training images: CBSD432 only.
#
#   jobs/train_defaults.sh DATA_DIR [STORAGE] [MODELS...]
#
# MODELS (default: all, in this order): denoise-base, sr, jpeg, inpaint, denoise, deblur-base,
# deblur, general. The release-1 denoiser (denoise-base, Gaussian noise from ImageNet) starts JPEG,
# inpainting, the robust denoiser (denoise: gray, correlated, shot and JPEG-compressed noise) and
# the general model (task transfer, --init); the deblurring model trains from ImageNet
# (deblur-base) and is then fine-tuned on 8-bit inputs with mild noise (deblur).
# DATA_DIR holds train/CBSD432 and val/{Set14_SRF4_HR,CBSD68}. Validation during training uses a
# set the card's numbers are not reported on (Set14, or the first 6 CBSD68 images for SR and
# JPEG), and the exported model is the last step, not the best validation checkpoint.
# Re-running resumes unfinished runs; finished runs are exported again.
# WORKERS / CPUS_PER_WORKER / USE_GPU (1) set the Ray Train scaling (default: 1 worker, 1 CPU;
# with several runs at once on a small machine, one thread each is fastest).
set -euo pipefail

data=$(cd "${1:?usage: jobs/train_defaults.sh DATA_DIR [STORAGE] [MODELS...]}" && pwd)
storage=$(mkdir -p "${2:-runs}" && cd "${2:-runs}" && pwd)
shift $(( $# >= 2 ? 2 : 1 ))
models=("$@")
(( ${#models[@]} )) || models=(denoise-base sr jpeg inpaint denoise deblur-base deblur general)

scaling=(--workers "${WORKERS:-1}" --cpus-per-worker "${CPUS_PER_WORKER:-1}")
[[ "${USE_GPU:-0}" == 1 ]] && scaling+=(--use-gpu)
here=$(cd "$(dirname "$0")/.." && pwd)

# model -> task, config, validation set, --init (a run's final model), installed as the default?
declare -A task=([denoise-base]=denoise [sr]=sr [jpeg]=jpeg [inpaint]=inpaint [denoise]=denoise
                 [deblur-base]=deblur [deblur]=deblur [general]=general)
declare -A config=([denoise-base]=denoise [sr]=sr [jpeg]=jpeg [inpaint]=inpaint [denoise]=denoise-robust
                   [deblur-base]=deblur [deblur]=deblur-finetune [general]=general)
declare -A val=([denoise-base]=Set14_SRF4_HR [sr]=CBSD68 [jpeg]=CBSD68 [inpaint]=Set14_SRF4_HR
                [denoise]=Set14_SRF4_HR [deblur-base]=Set14_SRF4_HR [deblur]=Set14_SRF4_HR [general]=Set14_SRF4_HR)
# SR starts from ImageNet, not from the denoiser: on smooth bicubic inputs the denoiser's decoder
# features are all zero (ReLU), no gradient reaches the network and the loss stays flat.
declare -A init=([jpeg]=default-denoise [inpaint]=default-denoise [denoise]=default-denoise
                 [deblur]=default-deblur [general]=default-denoise)
declare -A ships=([sr]=1 [jpeg]=1 [inpaint]=1 [denoise]=1 [deblur]=1 [general]=1)
declare -A run=([denoise-base]=default-denoise [sr]=default-sr [jpeg]=default-jpeg [inpaint]=default-inpaint
                [denoise]=default-denoise-robust [deblur-base]=default-deblur [deblur]=default-deblur-2
                [general]=default-general)
for model in "${models[@]}"; do
    from=()
    [[ -n "${init[$model]:-}" ]] && from=(--init "$storage/${init[$model]}/model")
    restoration finetune --task "${task[$model]}" --train-images "$data/train/CBSD432" \
        --val-images "$data/val/${val[$model]}" "${scaling[@]}" \
        --storage "$storage" --name "${run[$model]}" --config "$here/jobs/configs/${config[$model]}.yaml" "${from[@]}"
    [[ -n "${ships[$model]:-}" ]] && restoration export "$storage/${run[$model]}/model" --as-default
done
