"""The demo model's corpus: ../shared/data/text/*.txt without Project Gutenberg's header and licence
footer; the last 5% of each file (cut at a line break) is held out for evaluation."""
import os

HELDOUT = 0.05


def strip_gutenberg(text):
    start = text.find("*** START OF")
    if start >= 0:
        text = text[text.find("\n", start) + 1:]
    end = text.find("*** END OF")
    if end >= 0:
        text = text[:end]
    return text.lstrip("\ufeff").strip() + "\n"


def load_corpus(data_dir):
    """Returns (train_texts, heldout_texts), one string per source file, in file-name order."""
    train, heldout = [], []
    for name in sorted(os.listdir(data_dir)):
        if not name.endswith(".txt"):
            continue
        with open(os.path.join(data_dir, name), encoding="utf-8") as f:
            text = strip_gutenberg(f.read())
        cut = text.rfind("\n", 0, int(len(text) * (1 - HELDOUT))) + 1
        train.append(text[:cut])
        heldout.append(text[cut:])
    return train, heldout
