"""A small GPT-2 language model and its word-level tokenizer, saved with save_pretrained.

    python tiny_lm.py FOLDER [--width 32] [--layers 2]

Random weights (energy depends on shapes, not values) and a vocabulary of the
words the scripts here use, so that a Hugging Face pipeline loads it offline.
"""
import argparse
import re
from pathlib import Path

WORDS = sorted(set(re.findall(r"[a-z]+", """the quick brown fox an energy profiler measures layers of a network
draw power every inference counts where do joules go zero one two three four five six seven eight nine""")))


def save(folder, width: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(folder)
    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "<eos>", *WORDS, *map(str, range(100))])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>", bos_token="<eos>")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=width, n_layer=layers, n_head=heads,
                        bos_token_id=2, eos_token_id=2, pad_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args()
    print(save(a.folder, a.width, a.layers))
