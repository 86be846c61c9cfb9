#!/usr/bin/env bash
# The GPU benchmarks of this repository in one short device call (about 8 minutes):
#   batched training throughput (tools/bench/train_batch.py synthetic, B = 1/8/32, CE and
#   ncmi_mil, bf16) and wsi-extract throughput (tools/bench/extract_gpu.py): for
#   resnet50-trunc (fp16) and ViT-L/16 (bf16), the full pipeline with each reader
#   (openslide, tile decode on the CPU workers, tile decode + nvJPEG with --gpu_decode)
#   against the encoder alone on device-resident batches, and GPU busy %.
# Copy $OUT/extract_gpu.json into docs/bench/gpu/ with the run's BENCHMARKS.md entry.
# The device image has torch, lightning, timm, torchvision, h5py, scikit-learn, opencv;
# the slide readers and imagecodecs travel as wheels in .whl/ (see BENCHMARKS.md).
# Usage (on the GPU machine, repository root):  OUT=/some/dir bash tools/bench/gpu_session.sh
set -uo pipefail
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c \
  "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; \
  nproc; } 2>&1 | tee "$OUT/machine.txt"
for loss in ce ncmi_mil; do
  timeout 150 python3 tools/bench/train_batch.py synthetic --bags 256 --patches 5000 --dim 1024 \
    --batch-sizes 1 8 32 --repeats 2 --loss "$loss" --accelerator gpu --precision bf16-mixed \
    --json "$OUT/train_batch_gpu_${loss}.json" 2>&1 | tail -n 40
done
timeout 360 python3 tools/bench/extract_gpu.py --slides 8 --size 8192 \
  --readers openslide auto gpu > "$OUT/extract_gpu.jsonl" 2> "$OUT/extract_gpu.log"
echo "extract_gpu rc=$?"; tail -n 5 "$OUT/extract_gpu.log"
# One JSON line per finished measurement (a timeout keeps the ones before it); the last
# complete line, or the indented object printed at the end, is the result.
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
text = (out / "extract_gpu.jsonl").read_text()
last = None
for line in text.splitlines():
    if line.startswith("{") and line.endswith("}"):
        try:
            last = json.loads(line)
        except ValueError:
            pass
if last is None:
    try:
        last = json.loads(text[text.index("{\n"):])
    except ValueError:
        last = {"error": "no complete result"}
(out / "extract_gpu.json").write_text(json.dumps(last, indent=2) + "\n")
print(json.dumps(last, indent=2))
PY
