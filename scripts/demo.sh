#!/usr/bin/env bash
# The demo: installs simclr-tf into .venv, generates the demo data set, pretrains a ResNet-18 with
# SimCLR, probes it against a random-init encoder, fine-tunes a classifier and a segmentation
# model, and writes the README's results table and figures (media/).
# Environment knobs: DEMO_EPOCHS (pretraining epochs), DEMO_DIR (data), DEMO_OUT (results).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup_env.sh"
cd "$repo"
py=.venv/bin/python
data="${DEMO_DIR:-demo_data}"
out="${DEMO_OUT:-logs/demo}"
epochs="${DEMO_EPOCHS:-20}"
size="48 48"
common=(--input_size="$size" --seed=0)

echo "== 1/6 demo data: $data"
$py -m simclr_tf.data.demo "$data" --num_train 1000 --num_val 200 --image_size 48

echo "== 2/6 SimCLR pretraining ($epochs epochs)"
$py main.py --task=pretrain "${common[@]}" --train_file_path="$data/train_unlabeled.txt" \
  --val_file_path="$data/val.txt" --knn_train_file_path="$data/train.txt" --knn_every=5 \
  --batch_size=64 --num_epochs="$epochs" --warmup_epochs=2 --cache \
  --pretrain_save_path="$out/pretrain"

echo "== 3/6 linear evaluation: pretrained encoder, then random-init encoder"
for encoder in pretrain random_init; do
  $py main.py --task=linear_eval "${common[@]}" --train_file_path="$data/train.txt" \
    --val_file_path="$data/val.txt" --pretrain_save_path="$out/$encoder"
done

echo "== 4/6 classification fine-tuning (5% of the labels) from the pretrained encoder"
$py main.py --task=classification "${common[@]}" --train_file_path="$data/train.txt" \
  --val_file_path="$data/val.txt" --num_classes=4 --train_fraction=0.2 --batch_size=32 --num_epochs=10 \
  --pretrain_save_path="$out/pretrain" --finetune_save_path="$out/classification"

echo "== 5/6 segmentation: pretrained and random-init encoders"
for encoder in pretrain random_init; do
  $py main.py --task=segmentation "${common[@]}" --train_file_path="$data/train_seg.txt" \
    --val_file_path="$data/val_seg.txt" --num_classes=5 --train_fraction=0.2 --batch_size=16 --num_epochs=10 \
    --pretrain_save_path="$out/$encoder" --finetune_save_path="$out/segmentation_$encoder"
done

echo "== 6/6 report: README table and media/"
$py scripts/demo_report.py --results "$out" --media media --readme README.md
