# Labels and class names through import -> synthesize -> export on the Weizmann horses (a plumbing check, not a
# quality benchmark: a 0.2-kimg GAN). Usage: bash benchmarks/formats_horse_check.sh  [OUT=dir HORSES=dir PYTHON=python]
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/platform:$PWD OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
AL="$PY -m pipelines.cli"
R=${OUT:-/tmp/fmt_horse}
H=${HORSES:-$(cd ../shared/data/weizmann_horse && pwd)}
export H R
rm -rf $R/in $R/runs $R/synth $R/coco $R/voc $R/yolo
# 1) the first 16 horses as a CVAT "Segmentation mask" export (RGB colour masks + labelmap.txt) -- the import side
$PY - <<'PY'
import numpy as np
from pathlib import Path
from PIL import Image
from autolabel.data.labeled import LabeledFolder
import os
H = Path(os.environ["H"]); R = Path(os.environ["R"]) / "in"
ds = LabeledFolder.from_dirs(H / "rgb", H / "figure_ground", limit=16)
(R / "JPEGImages").mkdir(parents=True); (R / "SegmentationClass").mkdir()
(R / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nhorse:250,50,83::\n")
for i in range(len(ds)):
    it = ds[i]; m = it["mask"].numpy()
    img = ((it["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(img).save(R / "JPEGImages" / f"{it['id']}.jpg", quality=95)
    rgb = np.zeros((*m.shape, 3), np.uint8); rgb[m == 1] = (250, 50, 83)
    Image.fromarray(rgb).save(R / "SegmentationClass" / f"{it['id']}.png")
print("CVAT-style horses:", len(ds), "masks", ds[0]["mask"].shape)
PY
G="gan.resolution=32 gan.z_dim=64 gan.w_dim=64 gan.n_mapping=2 gan.channel_base=256 gan.channel_max=64 gan_train.batch_size=8"
C="trainer.accelerator=cpu trainer.enable_progress_bar=false run.root=$R/runs"
$AL fit gan images=$H/rgb kimg=0.2 $G $C
GEN=$(ls $R/runs/gan/*/gan/generator.pt)
$AL fit encoder generator=$GEN images=$H/rgb encoder.width=8 encoder.max_width=32 encoder_train.phase1_steps=20 encoder_train.finetune_steps=5 encoder_train.batch_size=8 lpips_random=true $C
ENC=$(ls $R/runs/encoder/*/encoder/checkpoints/last.ckpt)
$AL fit labels generator=$GEN encoder=$ENC labeled=$R/in label_generator.n_members=3 label_generator.hidden=[32,16] label_generator.fp16=false label_train.max_steps=200 lpips_random=true $C
LAB=$(ls $R/runs/labels/*/labels/checkpoints/last.ckpt)
$AL synthesize checkpoint=$LAB n=8 out=$R/synth accelerator=cpu progress=false
for f in coco voc yolo; do $AL export src=$R/synth format=$f out=$R/$f; done
$PY - <<'PY'
import json, numpy as np
from pathlib import Path
from PIL import Image
from autolabel.data.formats import read_labels
import os
R = Path(os.environ["R"])
plan = json.loads((R / "synth/plan.json").read_text()); print("plan.json classes:", plan["classes"])
rows = [json.loads(l) for l in (R / "synth/manifest.jsonl").read_text().splitlines()]
print("manifest classes:", [r.get("classes") for r in rows])
masks = [np.array(Image.open(R / "synth/labels" / f"{r['id']}.png")) for r in rows]
print("horse pixel share per sample:", [round(float((m == 1).mean()), 3) for m in masks])
for f in ("coco", "voc", "yolo"):
    b = read_labels(R / f)
    agree = [float((b.mask(i) == m).mean()) for i, m in enumerate(masks)]
    print(f, b.class_names(), "pixel agreement min", round(min(agree), 4))
PY
