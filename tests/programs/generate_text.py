"""A user's own script: text generation through a Hugging Face pipeline, as people write it.

    python generate_text.py MODEL_DIR [-n N] [--new-tokens K] [--context-words W] [--no-marks]

Loads a model saved with save_pretrained (with its tokenizer) through
transformers.pipeline, and for each prompt does its own work in Python: cleans
the text (with a context document of W words, when asked), tokenises it to keep
the prompt under a length, calls the pipeline (inside ``prof.inference()``
unless --no-marks), then post-processes the output (takes the new part, counts
the words of the context and the output). It runs as well under plain
``python`` (the profile is then its own) as under ``phprof run`` (it joins the
run's).
"""
import argparse
import collections
import re
import unicodedata

import phprof
import torch
from transformers import pipeline

PROMPTS = ["The quick brown fox", "An energy profiler measures", "Layers of a network draw power",
           "Every inference counts", "Where do the joules go"]


def clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[^a-z ]+", " ", text).strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=4)
    ap.add_argument("--context-words", type=int, default=0, help="a context document this long, cleaned, tokenised "
                    "and counted in Python with every call")
    ap.add_argument("--no-marks", action="store_true")
    args = ap.parse_args()
    context = " ".join(w for _, w in zip(range(args.context_words), _cycle(" ".join(PROMPTS).split())))
    torch.manual_seed(0)
    pipe = pipeline("text-generation", model=args.model, tokenizer=args.model, device="cpu")
    tok = pipe.tokenizer
    words = 0
    with phprof.profile() as prof:
        for i in range(args.n):
            text = clean(context + " " + PROMPTS[i % len(PROMPTS)] + " " + str(i))
            ids = tok(text)["input_ids"][-16:]  # our own tokenisation: keep prompts short
            prompt = tok.decode(ids)
            if args.no_marks:
                out = pipe(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
            else:
                with prof.inference("generate", prompt_tokens=len(ids)):
                    out = pipe(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False)
            new = out[0]["generated_text"][len(prompt):]
            words += len(re.findall(r"\w+", new))  # our own post-processing
            counts = collections.Counter(clean(context + " " + new).split())
    print(f"generated {words} words in {args.n} calls" + (f"; {len(counts)} distinct words" if args.n else ""))


def _cycle(items):
    while True:
        yield from items


if __name__ == "__main__":
    main()
