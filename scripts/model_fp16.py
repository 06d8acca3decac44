"""Rewrites a model folder's model.safetensors with fp16 storage (half the size; jerex loads it
back into fp32). Usage: .venv/bin/python scripts/model_fp16.py SRC_DIR DST_DIR"""
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
tensors = load_file(src / "model.safetensors")
half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
tmp = dst / ".model.safetensors.tmp"
save_file(half, tmp)
tmp.rename(dst / "model.safetensors")
for name in ("config.json", "tokenizer.json"):
    shutil.copy(src / name, dst / name)
print(f"{dst / 'model.safetensors'}: {(dst / 'model.safetensors').stat().st_size / 2**20:.1f} MiB")
