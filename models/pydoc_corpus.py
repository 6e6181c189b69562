"""Builds the pre-training corpus and vocabulary of models/albert-pydoc-small, offline:
the English prose of Python's documentation (the reST sources Debian's `python3-doc` installs
under /usr/share/doc/python3.X/html/_sources, or CPython's Doc/ folder on any machine) and the
docstrings of the standard library, cleaned to sentences, one per line, blank lines between
documents, deduplicated and split 98/2 by document into train.txt and heldout.txt; then a
lower-cased unigram SentencePiece vocabulary with ALBERT's special pieces, and the starting
folder (config.json, spiece.model, tokenizer_config.json) for `mlx-albert train --from-scratch`.

    apt-get install python3-doc      (Debian/Ubuntu; on a Mac pass --docs path/to/cpython/Doc)
    pip install sentencepiece
    python models/pydoc_corpus.py --out corpus

The corpus is not committed; corpus/MANIFEST.json records its sources and sha256 sums."""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import random
import re
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from make_tiny_albert import TOKENIZER_CONFIG, train_spiece  # noqa: E402

# The model pre-trained from it (models/pretrain_pydoc.sh): ALBERT's shape, scaled to a 2-core CPU.
MODEL = dict(
    embedding_size=128,
    hidden_size=256,
    num_attention_heads=4,
    intermediate_size=1024,
    num_blocks=6,
    num_groups=1,
    max_positions=64,
    activation="gelu_new",
)

HELD_OUT = 0.02
ROLE = re.compile(r":[\w:+-]+:`!?~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :func:`name <target>` -> name
LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")  # `text <url>`_ -> text
LITERAL = re.compile(r"``([^`]+)``")
EMPHASIS = re.compile(r"(\*\*|\*|`)([^*`]+)\1_?")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
WORD = re.compile(r"[A-Za-z]{2,}")
HEADING = re.compile(r"([=\-~^*#\"'+])\1{2,}")
DIRECTIVE = re.compile(r"\.\. ([\w:-]+)::")
LIST_ITEM = re.compile(r"([*\-+]|\d+\.|#\.|\(\w\)) +")
SKIPPED = {  # directives whose bodies are not prose
    "code-block",
    "sourcecode",
    "code",
    "testcode",
    "testsetup",
    "testcleanup",
    "testoutput",
    "doctest",
    "productionlist",
    "literalinclude",
    "highlight",
    "index",
    "toctree",
    "image",
    "figure",
    "raw",
    "csv-table",
    "list-table",
    "table",
    "include",
    "module",
    "currentmodule",
    "moduleauthor",
    "sectionauthor",
    "audit-event",
    "opcode",
    "cmdoption",
    "option",
    "grammar-snippet",
    "only",
    "c:macro",
    "c:type",
    "c:var",
    "c:member",
    "impl-detail",
    "availability",
    "tabularcolumns",
}


def default_docs() -> str | None:
    found = sorted(glob.glob("/usr/share/doc/python3*/html/_sources"))
    return found[-1] if found else None


def inline(text: str) -> str:
    """reST inline markup to plain text."""
    text = LINK.sub(r"\1", ROLE.sub(r"\1", text))
    text = LITERAL.sub(r"\1", text)
    text = EMPHASIS.sub(r"\2", text)
    return re.sub(r"\s+", " ", text.replace("\\", "")).strip()


def sentences(paragraph: str) -> list[str]:
    """Prose sentences of one paragraph: at least four words, mostly letters, no markup left."""
    kept = []
    for s in SENTENCE_END.split(inline(paragraph)):
        words = s.split()
        if len(words) < 4 or len(s) > 400 or not s[0].isupper() or s[-1] not in ".!?:":
            continue
        if len("".join(WORD.findall(s))) < 0.6 * len(s.replace(" ", "")) or ">>>" in s or "::" in s:
            continue
        kept.append(s)
    return kept


def rest_documents(text: str) -> list[list[str]]:
    """A reST file's sections (split at headings) as lists of prose sentences. Literal blocks,
    code and table directives, comments and field lists are dropped; the bodies of description
    directives (function, class, note, ...) and list items are prose and kept."""
    documents, current, paragraph = [], [], []
    lines = text.splitlines()
    skip_indent = None  # inside a literal block or skipped directive: skip while indented deeper

    def flush():
        if paragraph:
            current.extend(sentences(" ".join(paragraph)))
            paragraph.clear()

    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        stripped = line.strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if HEADING.fullmatch(stripped) or (HEADING.fullmatch(nxt) and len(nxt) >= len(stripped) > 0):
            flush()  # a heading (or its over/underline): a new document
            if len(current) >= 2:
                documents.append(current)
            current = []
            continue
        if not stripped:
            flush()
            continue
        directive = DIRECTIVE.match(stripped)
        if directive or stripped.startswith(".."):
            flush()
            if not directive or directive.group(1) in SKIPPED:
                skip_indent = indent  # comments, targets and code-like directives: skip their bodies
            continue
        if stripped.startswith(("|", "+-", "+=", "==", ":", ">>>", "...")):
            flush()  # tables, field lists, doctest
            continue
        item = LIST_ITEM.match(stripped)
        if item:
            flush()
            stripped = stripped[item.end() :]
        if stripped.endswith("::"):
            paragraph.append(stripped[:-2].rstrip() + ":" if not stripped.endswith(" ::") else stripped[:-3])
            flush()
            skip_indent = indent
            continue
        paragraph.append(stripped)
    flush()
    if len(current) >= 2:
        documents.append(current)
    return documents


def docstring_documents(stdlib: Path) -> list[list[str]]:
    """Each docstring of a module, class or function of the standard library (tests, IDLE's and
    lib2to3's fixtures and site-packages left out) as one document."""
    documents = []
    for path in sorted(stdlib.rglob("*.py")):
        parts = set(path.relative_to(stdlib).parts)
        if parts & {"test", "tests", "site-packages", "idle_test", "lib2to3", "dist-packages"}:
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    found = [s for p in re.split(r"\n\s*\n", doc) for s in sentences(p)]
                    if len(found) >= 2:
                        documents.append(found)
    return documents


def deduplicate(documents: list[list[str]]) -> list[list[str]]:
    """Every sentence once (first occurrence kept); documents left with under two sentences dropped."""
    seen, kept = set(), []
    for document in documents:
        fresh = []
        for s in document:
            key = s.lower()
            if key not in seen:
                seen.add(key)
                fresh.append(s)
        if len(fresh) >= 2:
            kept.append(fresh)
    return kept


def held_out(document: list[str]) -> bool:
    """98/2 by a hash of the document's first sentence: stable whatever the order of the files."""
    return int(hashlib.sha256(document[0].encode()).hexdigest()[:8], 16) / 2**32 < HELD_OUT


def write(path: Path, documents: list[list[str]]) -> str:
    data = "\n\n".join("\n".join(d) for d in documents).encode() + b"\n"
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


TOPICS = ("tutorial", "library", "reference", "c-api")  # folders of the docs: the demo task's labels


def topic_examples(docs: Path, per_topic: tuple[int, int], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The fine-tuning demo's data: which part of the docs a sentence comes from (the tutorial, the
    library reference, the language reference or the C API). Train and dev take their sentences from
    different documents; `per_topic` examples of each topic in each."""
    rng = random.Random(seed)
    train, dev = [], []
    for topic in TOPICS:
        documents = [
            d for path in sorted((docs / topic).rglob("*.txt")) for d in rest_documents(path.read_text())
        ]
        rng.shuffle(documents)
        for part, n in zip((dev, train), per_topic[::-1], strict=True):
            taken = 0
            while documents and taken < n:
                for sentence in documents.pop():
                    if taken < n and 6 <= len(sentence.split()) <= 40:
                        part.append({"text": sentence, "label": topic})
                        taken += 1
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", default=default_docs(), help="folder of the docs' reST sources")
    parser.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="standard library folder")
    parser.add_argument("--out", type=Path, default=Path("corpus"))
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--task-out", type=Path, help="also write the demo task's jsonl files here")
    args = parser.parse_args()
    if not args.docs or not Path(args.docs).is_dir():
        parser.error("no reST sources: apt-get install python3-doc, or pass --docs path/to/cpython/Doc")
    docs = Path(args.docs)
    if args.task_out:
        train, dev = topic_examples(docs, (100, 75))
        write_jsonl(args.task_out / "pydoc_topics_train.jsonl", train)
        write_jsonl(args.task_out / "pydoc_topics_dev.jsonl", dev)
        print(f"wrote {len(train)} + {len(dev)} examples to {args.task_out}")
        return
    documents = []
    files = sorted(p for p in docs.rglob("*") if p.suffix in (".rst", ".txt") and "whatsnew" not in p.parts)
    for path in files:
        documents += rest_documents(path.read_text(encoding="utf-8", errors="replace"))
    documents += docstring_documents(Path(args.stdlib))
    documents = deduplicate(documents)
    train = [d for d in documents if not held_out(d)]
    heldout = [d for d in documents if held_out(d)]
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "docs": str(docs),
        "stdlib": str(args.stdlib),
        "python": sys.version.split()[0],
        "train.txt": write(args.out / "train.txt", train),
        "heldout.txt": write(args.out / "heldout.txt", heldout),
        "documents": [len(train), len(heldout)],
        "sentences": [sum(map(len, train)), sum(map(len, heldout))],
        "words": [sum(len(s.split()) for d in part for s in d) for part in (train, heldout)],
    }
    lowered = [s.lower() for d in train for s in d]
    spiece = train_spiece(lowered, args.vocab_size, character_coverage=0.9995)
    init = args.out / "init"
    init.mkdir(exist_ok=True)
    (init / "spiece.model").write_bytes(spiece)
    (init / "tokenizer_config.json").write_text(
        json.dumps(TOKENIZER_CONFIG | {"model_max_length": MODEL["max_positions"]}, indent=2)
    )
    manifest["spiece.model"] = hashlib.sha256(spiece).hexdigest()
    import sentencepiece as spm

    from mlx_albert import AlbertConfig

    vocab_size = spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    config = AlbertConfig(vocab_size=vocab_size, **MODEL, extra={"bos_token_id": 2, "eos_token_id": 3})
    config = config.to_hf() | {"architectures": ["AlbertForPreTraining"]}
    (init / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
