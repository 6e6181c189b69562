"""Where a checkpoint lives: a local folder, a model shipped inside the package (by short name), or
a Hub repo id downloaded with huggingface_hub (or read from the local cache when offline); and the
Checkpoint, resolved once and read once, that every loader takes."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .config import AlbertConfig
from .sentence.folder import SentenceConfig, read_sentence_config

# what a checkpoint needs from a Hub repo: configs, safetensors, the tokenizer, sentence-transformers'
# module folders (a Dense module may hold a .bin)
HUB_PATTERNS = ["*.json", "*.safetensors", "spiece.model", "*.txt", "*.md", "*_Dense/*"]
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
# short names of the models inside the package: they work from a wheel, in any folder
BUNDLED = {"pydoc-small": "albert-pydoc-small", "albert-pydoc-small": "albert-pydoc-small"}


def bundled(name: str) -> Path | None:
    """The shipped folder a short name stands for ("pydoc-small"), or None."""
    folder = BUNDLED.get(name)
    return BUNDLED_DIR / folder if folder else None


def resolve(
    path_or_repo_id: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local checkpoint folder, a bundled model's short name (a local folder of that name wins), or
    a Hub repo id downloaded (or found in the local cache)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if (shipped := bundled(str(path_or_repo_id))) is not None:
        return shipped
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the checkpoint folder that contains it")
    text = str(path_or_repo_id)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not text.strip():
        raise FileNotFoundError(f"checkpoint folder {text!r} does not exist")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    kwargs = dict(repo_id=text, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS)
    try:
        folder = Path(snapshot_download(**kwargs, local_files_only=offline))
    except Exception as first:  # no network, unknown repo, gated repo, ...
        try:  # fall back to whatever the local cache holds
            folder = Path(snapshot_download(**kwargs, local_files_only=True))
        except Exception:
            raise FileNotFoundError(_not_found(text, first, offline)) from None
    if not any(folder.glob("*.safetensors")) and not offline:  # only a PyTorch checkpoint
        folder = Path(
            snapshot_download(
                repo_id=text, revision=revision, cache_dir=cache_dir, allow_patterns=["pytorch_model*.bin*"]
            )
        )
    return folder


def _not_found(name: str, error: Exception, offline: bool) -> str:
    """Why a repo id could not be had: no network (HF_HUB_OFFLINE, or the Hub unreachable) and not in
    the cache, or the Hub does not know it."""
    kind = type(error).__name__
    text = str(error).lower()
    unreachable = kind in ("LocalEntryNotFoundError", "ConnectError", "ConnectionError", "ConnectTimeout",
                           "OfflineModeIsEnabled") or "connect" in text or "offline" in text  # fmt: skip
    if offline or unreachable:
        why = "HF_HUB_OFFLINE is set (offline)" if offline else "the Hub cannot be reached (no network)"
        return (
            f"{name!r} is not a local folder, {why} and the local Hugging Face cache does not hold it: "
            "connect to the network once to download it, or pass a local folder"
        )
    return (
        f"{name!r} is neither a local folder nor a repo id the Hub knows ({kind}); check the name (and "
        "`hf auth login` for a gated or private repo)"
    )


@dataclass
class Checkpoint:
    """A checkpoint resolved once (a folder, a shipped model's short name, or a Hub repo id) and
    read once: its sentence-transformers modules when it has them, and config.json when first
    asked for. Every loader takes one, so a load resolves and reads nothing twice."""

    source: str  # what the user named
    root: Path  # the resolved folder
    sentence: SentenceConfig | None = None  # sentence-transformers' modules.json and friends

    @classmethod
    def open(
        cls,
        path_or_repo_id: str | os.PathLike | Checkpoint,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> Checkpoint:
        if isinstance(path_or_repo_id, Checkpoint):
            return path_or_repo_id
        root = resolve(path_or_repo_id, revision, cache_dir)
        return cls(str(path_or_repo_id), root, read_sentence_config(root))

    @property
    def folder(self) -> Path:
        """The folder of the ALBERT checkpoint itself (config.json, weights, tokenizer): the root,
        or a sentence-transformers folder's Transformer module path."""
        return self.sentence.transformer if self.sentence is not None else self.root

    @functools.cached_property
    def config(self) -> AlbertConfig:
        if not (self.folder / "config.json").exists() and (self.folder / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"{self.source} holds LoRA adapters, not a model: load them onto their base model with "
                f"--model BASE --adapter-path {self.source} (adapter_path= in Python), or merge them "
                "into a model with `mlx-albert fuse --model BASE --adapter-path "
                f"{self.source} --save-path DIR`"
                f"{_base_named(self.folder)}"
            )
        return AlbertConfig.from_json(self.folder / "config.json")


def _base_named(folder: Path) -> str:
    """ "; its base: NAME" from an adapter's config, when it names one."""
    from .files import read_json
    from .text import escape

    try:
        base = read_json(folder / "adapter_config.json", "adapter config", limit=1 << 20).get("base_model")
    except (OSError, ValueError, AttributeError):
        return ""
    return f"; its base model: {escape(base)[:200]}" if isinstance(base, str) and base else ""
