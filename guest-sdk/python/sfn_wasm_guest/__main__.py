"""``python3 -m sfn_wasm_guest build [MODULE] [-o OUT] [--wit DIR] [--world NAME]``

Builds a handler component with componentize-py: MODULE (default ``handler``, i.e.
``handler.py`` in the current folder) must have one ``@handler`` function. A handler that
imports ``sfn_wasm_guest.http`` (directly or through its own modules) is built for the
``handler-with-http`` world (``wit-http/``: the handler world plus wasi:http's outgoing
handler), any other for ``handler``, unless --wit or --world say otherwise. Packages
installed in this Python's environment (``pip install``) are bundled as componentize-py
finds them. Defaults may be set in ``pyproject.toml``::

    [tool.sfn-wasm-guest]
    module = "handler"
    output = "greet.wasm"

Exit 0 when written, 1 when the build failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import site
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import sfn_wasm_guest

ENTRY = "_sfn_wasm_entry"


def settings() -> dict:
    """``[tool.sfn-wasm-guest]`` of ./pyproject.toml, or nothing."""
    try:
        with open("pyproject.toml", "rb") as f:
            return tomllib.load(f).get("tool", {}).get("sfn-wasm-guest", {})
    except FileNotFoundError:
        return {}


def componentize_py() -> str:
    """The componentize-py installed with this SDK (beside this Python), else on PATH."""
    beside = Path(sys.executable).parent / "componentize-py"
    found = str(beside) if beside.exists() else shutil.which("componentize-py")
    if not found:
        raise SystemExit("error: componentize-py is not installed; pip install sfn-wasm-guest installs it")
    return found


HTTP_MODULE = "sfn_wasm_guest.http"


def mentions_http(folder: Path) -> bool:
    """Whether a Python file of the project (not its venv or vendor/) imports
    ``sfn_wasm_guest.http``, read without running it."""
    for path in folder.rglob("*.py"):
        if {".venv", "venv", "vendor", "node_modules", "__pycache__"} & set(path.relative_to(folder).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == HTTP_MODULE for a in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and (
                node.module == HTTP_MODULE
                or (node.module == "sfn_wasm_guest" and any(a.name == "http" for a in node.names))
            ):
                return True
    return False


def imports_http(module: str, sdk_parent: Path) -> bool:
    """Whether the handler uses ``sfn_wasm_guest.http``: importing ``module`` in a plain
    Python (as componentize-py will inside the component) imports it, or, when that import
    fails here (a package built for WASI only, say), a file of the project imports it."""
    probe = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(Path.cwd())!r}, {str(sdk_parent)!r}]\n"
        f"importlib.import_module({module!r})\n"
        f"print({HTTP_MODULE!r} in sys.modules)\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        result = None
    if result is not None and result.returncode == 0:
        return result.stdout.strip().endswith("True") or mentions_http(Path.cwd())
    why = "took over 120 s" if result is None else (result.stderr.strip().splitlines() or ["failed"])[-1]
    print(f"warning: importing {module!r} outside the component {why}; choosing the world by its source", file=sys.stderr)
    return mentions_http(Path.cwd())


def build(args: argparse.Namespace) -> int:
    defaults = settings()
    module = (args.module or defaults.get("module") or "handler").removesuffix(".py")
    out = Path(args.out or defaults.get("output") or f"{module}.wasm").resolve()
    if not (Path(module.replace(".", "/") + ".py").exists() or Path(module.replace(".", "/")).is_dir()):
        print(f"error: no module {module!r} in {Path.cwd()} (give the handler's module as MODULE)", file=sys.stderr)
        return 2
    sdk_parent = Path(sfn_wasm_guest.__file__).resolve().parent.parent
    if args.wit:
        http = False
    elif args.world:
        http = args.world == "handler-with-http"
    else:
        http = imports_http(module, sdk_parent)
    sdk_wit = Path(sfn_wasm_guest.__file__).parent / ("wit-http" if http else "wit")
    wit = Path(args.wit).resolve() if args.wit else sdk_wit
    world = args.world or ("handler-with-http" if http else "handler")
    with tempfile.TemporaryDirectory(prefix="sfn-wasm-guest-") as tmp:
        Path(tmp, f"{ENTRY}.py").write_text(
            f"import {module} as _handler_module\n"
            "from sfn_wasm_guest._component import make_world\n"
            "WitWorld = make_world(_handler_module)\n"
        )
        # This Python's site-packages too: componentize-py looks only in $VIRTUAL_ENV's
        # (or a `python3` on PATH), which is not this one when the venv is not activated.
        packages = [p for p in site.getsitepackages() if Path(p).is_dir()]
        command = [
            componentize_py(), "-d", str(wit), "-w", world, "componentize", ENTRY,
            "-p", tmp, "-p", str(Path.cwd()), "-p", str(sdk_parent),
            *(arg for p in packages for arg in ("-p", p)), "-o", str(out),
        ]  # fmt: skip
        result = subprocess.run(command, stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        print(f"error: componentize-py failed (exit {result.returncode}); its message is above", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, world {world})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m sfn_wasm_guest", description="Build sfn-wasm-host handlers.")
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build the handler component")
    b.add_argument("module", nargs="?", help="the module with the @handler function (default: handler)")
    b.add_argument("-o", "--out", help="the component to write (default: MODULE.wasm)")
    b.add_argument("--wit", help="a WIT folder instead of the SDK's own")
    b.add_argument("--world", help="the world to build (default: handler, or handler-with-http for a handler importing sfn_wasm_guest.http)")
    args = parser.parse_args(argv)
    return build(args)


if __name__ == "__main__":
    sys.exit(main())
