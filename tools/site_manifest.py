#!/usr/bin/env python3
"""Write SITE/models/manifest.json: the size and sha256 of every model file the site serves.
The page's worker downloads exactly these sizes, checks these hashes before using or caching a
file, and keys its cache by hash, so a changed model is fetched again.

    python3 tools/site_manifest.py SITE
"""
import hashlib
import json
import sys
from pathlib import Path

MODEL_FILES = ("model.safetensors", "tokenizer.json", "config.json", ".gguf", "-lora.safetensors")


def main():
    site = Path(sys.argv[1])
    files = {}
    for path in sorted((site / "models").rglob("*")):
        if path.is_file() and path.name.endswith(MODEL_FILES):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            files[path.relative_to(site).as_posix()] = {"bytes": path.stat().st_size, "sha256": h.hexdigest()}
    (site / "models" / "manifest.json").write_text(json.dumps({"files": files}, indent=1) + "\n")


if __name__ == "__main__":
    main()
