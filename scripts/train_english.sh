#!/usr/bin/env bash
# The shipped English model, end to end (about 2 hours on 2 CPU cores; see MODEL_CARD.md):
#   1. cross-entropy training            configs/flickr8k.yaml       -> runs/flickr8k/
#   2. self-critical fine-tuning (CIDEr) configs/flickr8k_scst.yaml  -> runs/flickr8k-scst/
#   3. weight soup 0.7 x stage 1 + 0.3 x stage 2                      -> runs/flickr8k-soup/
#   4. dev metrics (official PTB tokenisation, METEOR), stored in the model file for the app
# Then ship it: cp runs/flickr8k-soup/{mymodel.h5,tokenizer.pkl} .
# Every stage resumes or re-runs on its own; run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

captioner train --config configs/flickr8k.yaml
captioner train --config configs/flickr8k_scst.yaml
captioner average runs/flickr8k/mymodel.h5 runs/flickr8k-scst/mymodel.h5 --weights 0.7 0.3 \
  --output runs/flickr8k-soup
captioner evaluate --model runs/flickr8k-soup/mymodel.h5 --split dev --beams 1 3 \
  --output runs/flickr8k-soup/dev_scores.json --record
