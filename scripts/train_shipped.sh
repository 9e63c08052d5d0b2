#!/usr/bin/env bash
# A shipped model, end to end: scripts/train_shipped.sh [en|zh|de|en-lite2]   (default en; see MODEL_CARD.md)
#   1. cross-entropy training              configs/flickr8k[_LANG].yaml       -> runs/flickr8k[-LANG]/
#   2. self-critical fine-tuning (CIDEr)   configs/flickr8k[_LANG]_scst.yaml  -> runs/flickr8k[-LANG]-scst/
#   3. weight soup 0.7 x stage 1 + 0.3 x stage 2                              -> runs/flickr8k[-LANG]-soup/
#   4. dev metrics, stored in the model file for the app's model panel
# Then ship it: cp runs/flickr8k-soup/{mymodel.h5,tokenizer.pkl} .   (models/LANG/ for zh, de)
# en-lite2: the EfficientNet-Lite2 English model, stage 1 and its scores only -> runs/flickr8k-lite2/ (models/en-lite2/)
# About 2 hours for English on 2 CPU cores, less for the others. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

lang="${1:-en}"
if [ "$lang" = en-lite2 ]; then  # English on EfficientNet-Lite2: cross-entropy only (SCST lowered its scores)
  captioner train --config configs/flickr8k_lite2.yaml
  exec captioner evaluate --model runs/flickr8k-lite2/mymodel.h5 --split dev --beams 1 3 --runtime tensorflow \
    --output runs/flickr8k-lite2/dev_scores.json --record
fi
if [ "$lang" = en ]; then suffix=""; name=""; else suffix="_$lang"; name="-$lang"; fi

captioner train --config "configs/flickr8k${suffix}.yaml"
captioner train --config "configs/flickr8k${suffix}_scst.yaml"
captioner average "runs/flickr8k${name}/mymodel.h5" "runs/flickr8k${name}-scst/mymodel.h5" --weights 0.7 0.3 \
  --output "runs/flickr8k${name}-soup"
captioner evaluate --model "runs/flickr8k${name}-soup/mymodel.h5" --split dev --beams 1 3 \
  --output "runs/flickr8k${name}-soup/dev_scores.json" --record
