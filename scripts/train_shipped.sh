#!/usr/bin/env bash
# A shipped model, end to end: scripts/train_shipped.sh [en|zh|de|en-mobilenet|en-fast]   (default en; see MODEL_CARD.md)
# en, on EfficientNet-Lite2 features:
#   1. cross-entropy training                        configs/flickr8k_lite2.yaml          -> runs/flickr8k-lite2/
#   2. three more epochs without label smoothing     configs/flickr8k_lite2_ft.yaml       -> runs/flickr8k-lite2-ft/
#   3. self-critical fine-tuning (CIDEr) from 2      configs/flickr8k_lite2_ft_scst.yaml  -> runs/flickr8k-lite2-ft-scst/
#   4. weight soup 0.5 x stage 1 + 0.5 x stage 3                                           -> runs/flickr8k-lite2-soup/
# de, on EfficientNet-Lite2 features: the English stages on the German captions
#   configs/flickr8k_de_lite2.yaml, flickr8k_de_lite2_ft.yaml, flickr8k_de_lite2_ft_scst.yaml, then the soup
#   0.5 x stage 1 + 0.5 x stage 3 -> runs/flickr8k-de-lite2-soup/
# zh, on EfficientNet-Lite2 features: the English stages on the Chinese captions
#   configs/flickr8k_zh_lite2.yaml, flickr8k_zh_lite2_ft.yaml, flickr8k_zh_lite2_ft_scst.yaml, then the soup
#   0.5 x stage 1 + 0.5 x stage 3 -> runs/flickr8k-zh-lite2-soup/
# en-mobilenet (English on MobileNetV2), on MobileNetV2 features:
#   1. cross-entropy training              configs/flickr8k.yaml       -> runs/flickr8k/
#   2. self-critical fine-tuning (CIDEr)   configs/flickr8k_scst.yaml  -> runs/flickr8k-scst/
#   3. weight soup 0.7 x stage 1 + 0.3 x stage 2                       -> runs/flickr8k-soup/
# en-fast, the same three steps with a smaller decoder: configs/flickr8k_small.yaml, flickr8k_small_scst.yaml, then
#   0.7 x stage 1 + 0.3 x stage 2 -> runs/flickr8k-small-soup/
# then dev metrics, stored in the model file for the app's model panel.
# Ship it: cp runs/<run>[-soup]/{mymodel.h5,tokenizer.pkl} .   (models/<name>/ for the others)
# About 1.7 hours for English on 2 CPU cores (after 3.4 minutes extracting its features), 1.5 for German, 2 for
# en-mobilenet, one for the others. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

name="${1:-en}"
case "$name" in  # the stages' recipes, stage 1's run folder, then (for a soup) stage 2's folder and the weights
  en) stages=(flickr8k_lite2 flickr8k_lite2_ft flickr8k_lite2_ft_scst); run=flickr8k-lite2
      soup=(flickr8k-lite2-ft-scst 0.5 0.5) ;;
  en-mobilenet) stages=(flickr8k flickr8k_scst); run=flickr8k; soup=(flickr8k-scst 0.7 0.3) ;;
  en-fast) stages=(flickr8k_small flickr8k_small_scst); run=flickr8k-small; soup=(flickr8k-small-scst 0.7 0.3) ;;
  zh) stages=(flickr8k_zh_lite2 flickr8k_zh_lite2_ft flickr8k_zh_lite2_ft_scst); run=flickr8k-zh-lite2
      soup=(flickr8k-zh-lite2-ft-scst 0.5 0.5) ;;
  de) stages=(flickr8k_de_lite2 flickr8k_de_lite2_ft flickr8k_de_lite2_ft_scst); run=flickr8k-de-lite2
      soup=(flickr8k-de-lite2-ft-scst 0.5 0.5) ;;
  *) echo "train_shipped.sh: unknown model '$name' (en, zh, de, en-mobilenet or en-fast)" >&2; exit 2 ;;
esac

for stage in "${stages[@]}"; do
  captioner train --config "configs/$stage.yaml"
done
if [ "${#soup[@]}" -gt 0 ]; then
  captioner average "runs/$run/mymodel.h5" "runs/${soup[0]}/mymodel.h5" --weights "${soup[@]:1}" --output "runs/$run-soup"
  run="$run-soup"
fi
captioner evaluate --model "runs/$run/mymodel.h5" --split dev --beams 1 3 --runtime tensorflow \
  --output "runs/$run/dev_scores.json" --record
