#!/usr/bin/env bash
# The main job on the embedded default, on CPU, no hub: train the tiny T5 on the bundled sample,
# evaluate it, write the report, then serve it on localhost. Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/demo}
mkdir -p "$RUN"

step() { printf '\n==> %s\n' "$*"; }

if [ -f train/__main__.py ]; then
  step "train: 2 CPU processes, DeepSpeed ZeRO-3, tiny T5 (configs/train/tiny-cpu.yaml)"
  accelerate launch --config_file configs/accelerate/cpu-2proc.yaml -m train \
    --config configs/train/tiny-cpu.yaml --output-dir "$RUN/train"
else
  step "train: not built yet (issue: Training). Building the untrained tiny model so the rest can run."
  python -m radreport.build_tiny --spec configs/model/tiny-t5.yaml --data data/sample/train.json --out "$RUN/train/model"
fi
MODEL="$RUN/train/model"

if [ -f eval/__main__.py ]; then
  step "evaluate on dev1 (MIMIC-style) and dev2 (Indiana-style)"
  for ds in dev1 dev2; do
    python -m eval predict --model "$MODEL" --data "data/sample/$ds.json" --dataset "$ds" \
      --out "$RUN/predictions/finetuned-$ds.jsonl" --num-beams 4 --max-new-tokens 64
    python -m eval baselines --train data/sample/train.json --data "data/sample/$ds.json" --dataset "$ds" \
      --out "$RUN/predictions"
  done
  python -m eval report "$RUN"/predictions/*.jsonl --out "$RUN/report"
  step "report written: $RUN/report/report.md and report.html"
  sed -n '1,30p' "$RUN/report/report.md"
else
  step "evaluate: not built yet (issue: Evaluation)"
fi

if [ -f serve/__main__.py ]; then
  step "serve on http://127.0.0.1:8000 (Ctrl-C to stop). Try:"
  cat <<CURL
curl -s http://127.0.0.1:8000/impression -H 'content-type: application/json' \\
  -d '{"findings": "There is a small left pleural effusion. The heart size is normal.", "num_beams": 4}'
CURL
  exec python -m serve --model "$MODEL" --host 127.0.0.1 --port 8000
else
  step "serve: not built yet (issue: Serving)"
fi
