"""Build captioner/features/imagenet_classes.tsv: the 1,000 ImageNet classes with a tag name and a caption word.

Run once by hand (the table is committed; nothing reads WordNet or timm at run time):

    pip install nltk && apt-get install wordnet-base && pip download --no-deps timm -d /tmp/timm
    python scripts/build_imagenet_table.py --timm-wheel /tmp/timm/timm-*.whl

The class order and lemmas come from timm's `imagenet_synsets.txt` / `imagenet_synset_to_lemma.txt`; the caption
word is the nearest WordNet 3.0 hypernym (Debian's wordnet-base, read with nltk) among CONCEPTS below, else the
compound's head noun when WordNet lists it as a hypernym, else a one-word name; the reviewed overrides in
captioner/features/imagenet_overrides.tsv win over all of that. docs/grounding.md says how the table was reviewed.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "captioner" / "features" / "imagenet_classes.tsv"
OVERRIDES = ROOT / "captioner" / "features" / "imagenet_overrides.tsv"
INFO = "timm/data/_info/"

# Caption-level concepts: a WordNet synset → the word people write for anything under it. The nearest one up the
# hypernym graph wins, so specific entries ("duck") beat general ones ("bird").
CONCEPTS = {
    # animals
    "domestic_cat.n.01": "cat", "dog.n.01": "dog", "wolf.n.01": "wolf", "fox.n.01": "fox", "bear.n.01": "bear",
    "lion.n.01": "lion", "tiger.n.02": "tiger", "leopard.n.02": "leopard", "cheetah.n.01": "cheetah",
    "big_cat.n.01": "cat", "bird.n.01": "bird", "duck.n.01": "duck", "goose.n.01": "goose", "swan.n.01": "swan",
    "owl.n.01": "owl", "eagle.n.01": "eagle", "parrot.n.01": "parrot", "penguin.n.01": "penguin",
    "chicken.n.02": "chicken", "fish.n.01": "fish", "shark.n.01": "shark", "snake.n.01": "snake",
    "lizard.n.01": "lizard", "turtle.n.02": "turtle", "frog.n.01": "frog", "crocodilian_reptile.n.01": "crocodile",
    "spider.n.01": "spider", "butterfly.n.01": "butterfly", "bee.n.01": "bee", "ant.n.01": "ant",
    "beetle.n.01": "beetle", "insect.n.01": "insect", "crab.n.01": "crab", "lobster.n.02": "lobster",
    "monkey.n.01": "monkey", "ape.n.01": "ape", "elephant.n.01": "elephant", "horse.n.01": "horse",
    "zebra.n.01": "zebra", "cattle.n.01": "cow", "sheep.n.01": "sheep", "goat.n.01": "goat", "swine.n.01": "pig",
    "camel.n.01": "camel", "rabbit.n.01": "rabbit", "mouse.n.01": "mouse", "squirrel.n.01": "squirrel",
    "antelope.n.01": "antelope", "whale.n.02": "whale", "seal.n.09": "seal", "jellyfish.n.02": "jellyfish",
    "snail.n.01": "snail",
    # vehicles
    "car.n.01": "car", "truck.n.01": "truck", "bus.n.01": "bus", "locomotive.n.01": "train",
    "passenger_car.n.01": "train", "streetcar.n.01": "tram", "boat.n.01": "boat", "ship.n.01": "ship",
    "airplane.n.01": "plane", "bicycle.n.01": "bicycle", "motorcycle.n.01": "motorcycle",
    "motor_scooter.n.01": "scooter", "tractor.n.01": "tractor",
    # furniture and household
    "bed.n.01": "bed", "chair.n.01": "chair", "table.n.02": "table", "desk.n.01": "desk", "sofa.n.01": "couch",
    "bench.n.01": "bench", "clock.n.01": "clock", "lamp.n.01": "lamp", "piano.n.01": "piano",
    "guitar.n.01": "guitar", "bottle.n.01": "bottle", "cup.n.01": "cup", "bowl.n.03": "bowl", "pot.n.01": "pot",
    "hat.n.01": "hat", "shoe.n.01": "shoe", "bag.n.01": "bag", "bag.n.04": "bag", "ball.n.01": "ball",
    "umbrella.n.01": "umbrella", "computer.n.01": "computer", "telephone.n.01": "phone", "dress.n.01": "dress",
    "television_receiver.n.01": "television", "fence.n.01": "fence", "bridge.n.01": "bridge",
    # food
    "pizza.n.01": "pizza", "sandwich.n.01": "sandwich", "mushroom.n.05": "mushroom", "fungus.n.01": "mushroom",
    "bread.n.01": "bread",
}


def open_wordnet(dict_dir: Path, man_page: Path, scratch: Path) -> WordNetCorpusReader:
    """WordNet 3.0 from Debian's wordnet-base, which lacks the `lexnames` file nltk needs: it is rebuilt from the
    table in the package's own lexnames(5WN) man page."""
    for path in dict_dir.iterdir():
        if path.is_file():
            shutil.copy(path, scratch)  # nltk refuses files reached through symlinks out of its root
    categories = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    with gzip.open(man_page, "rt") as page:
        rows = re.findall(r"^(\d\d)\t(\S+)\s*\t", page.read(), re.M)
    lines = [f"{number}\t{name}\t{categories[name.split('.')[0]]}\n" for number, name in rows]
    (scratch / "lexnames").write_text("".join(lines))
    nltk.data.path.append(str(scratch))

    class Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # we read 3.0 itself: no mapping from nltk's own (absent, never downloaded) wordnet

    return Reader(str(scratch), None)


def read_timm(wheel: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The 1,000 wnids in class-index order and each wnid's lemmas, from timm's wheel."""
    with zipfile.ZipFile(wheel) as archive:
        wnids = archive.read(INFO + "imagenet_synsets.txt").decode().split()
        lemma_lines = archive.read(INFO + "imagenet_synset_to_lemma.txt").decode().splitlines()
    lemmas = {}
    for line in lemma_lines:
        wnid, names = line.split("\t")
        lemmas[wnid] = [name.strip() for name in names.split(",")]
    return wnids, lemmas


def hypernym_distances(synset) -> dict:
    """Every hypernym (instance hypernyms too) of a synset with its shortest distance, the synset itself at 0."""
    distances, frontier = {synset: 0}, [synset]
    while frontier:
        nxt = []
        for node in frontier:
            for parent in node.hypernyms() + node.instance_hypernyms():
                if parent not in distances:
                    distances[parent] = distances[node] + 1
                    nxt.append(parent)
        frontier = nxt
    return distances


def caption_word(synset, name: str, concepts: dict) -> str:
    """The nearest concept's word, else the name's head noun when it names a hypernym, else a one-word name."""
    distances = hypernym_distances(synset)
    found = sorted((distance, concepts[node]) for node, distance in distances.items() if node in concepts)
    if found:
        return found[0][1]
    head = name.split()[-1].lower()
    if " " in name and any(head in node.lemma_names() for node in distances if node is not synset):
        return head
    return name.lower() if re.fullmatch(r"[a-z]+", name) else ""


def unique_names(wnids: list[str], lemmas: dict[str, list[str]]) -> list[str]:
    """Each class's first lemma as its tag name; a name two classes share takes that class's next unused lemma."""
    names = [lemmas[wnid][0] for wnid in wnids]
    counts = Counter(names)
    for index, wnid in enumerate(wnids):
        if counts[names[index]] > 1:
            spare = [lemma for lemma in lemmas[wnid][1:] if lemma not in counts]
            if spare:
                names[index] = spare[0]
    return names


def read_overrides(path: Path) -> dict[str, tuple[int, str, str]]:
    """wnid → (index, name or '' to keep, caption word or '' for none) from the reviewed override table."""
    overrides = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            index, wnid, name, word = line.split("\t")
            overrides[wnid] = (int(index), name.strip(), word.strip())
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-wheel", type=Path, required=True, help="timm-*.whl from `pip download --no-deps timm`")
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"), help="wordnet-base's dict")
    parser.add_argument("--lexnames-man", type=Path, default=Path("/usr/share/man/man5/lexnames.5WN.gz"))
    args = parser.parse_args()
    wnids, lemmas = read_timm(args.timm_wheel)
    assert len(wnids) == 1000, f"expected 1000 ImageNet classes, found {len(wnids)}"
    overrides = read_overrides(OVERRIDES)
    with tempfile.TemporaryDirectory() as scratch:
        wordnet = open_wordnet(args.wordnet_dir, args.lexnames_man, Path(scratch))
        concepts = {wordnet.synset(key): word for key, word in CONCEPTS.items()}
        rows, worded = [], 0
        for index, (wnid, name) in enumerate(zip(wnids, unique_names(wnids, lemmas), strict=True)):
            synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
            word = caption_word(synset, name, concepts)
            if wnid in overrides:
                assert overrides[wnid][0] == index, f"{OVERRIDES.name}: {wnid} is class {index}, not {overrides[wnid]}"
                name, word = overrides[wnid][1] or name, overrides[wnid][2]
            rows.append(f"{index}\t{wnid}\t{name}\t{word}\n")
            worded += bool(word)
    names = [row.split("\t")[2] for row in rows]
    assert len(set(names)) == len(names), f"duplicate tag names: {[n for n, c in Counter(names).items() if c > 1]}"
    TABLE.write_text("index\twnid\tname\tcaption_word\n" + "".join(rows))
    print(f"wrote {TABLE.relative_to(ROOT)}: {len(rows)} classes, {worded} with a caption word")


if __name__ == "__main__":
    main()
