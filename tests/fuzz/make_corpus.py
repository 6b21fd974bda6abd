"""Writes the committed seed corpus: tests/fuzz/corpus/<target>/ from each
target's seeds() (real messages made by wgc's own code, and by the kernel
where the target says so), named by content hash as libFuzzer names its
finds.  Run as root (the netlink seeds need a namespace):

    python tests/fuzz/make_corpus.py [TARGET ...]

Files captured from other implementations (wireguard-go's answers) are kept
alongside under names of their own; this script leaves them in place.
"""
import hashlib
import importlib
import os
import sys

import common
from run import TARGETS


def write(name: str) -> int:
    module = importlib.import_module(f"fuzz_{name}")
    directory = common.corpus_dir(name)
    os.makedirs(directory, exist_ok=True)
    for old in os.listdir(directory):
        if len(old) == 40:  # a content hash: ours to replace
            os.unlink(os.path.join(directory, old))
    seeds = module.seeds()
    for seed in seeds:
        module.one_input(seed)  # every seed passes its own target
        with open(os.path.join(directory, hashlib.sha1(seed).hexdigest()), "wb") as f:
            f.write(seed)
    return len(seeds)


if __name__ == "__main__":
    for target in sys.argv[1:] or TARGETS:
        print(f"{target}: {write(target)} seeds")
