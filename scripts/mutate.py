"""Mutation testing of the protocol modules: which small wrong changes do their fast tests let through?

    python scripts/mutate.py [--module NAME ...] [--max-mutants N] [--seed S] [--jobs J]

Everything happens in a temporary copy of the worktree (its built extensions included);
the worktree itself is never written to.

The Python modules (noise, cookie, uapi) go through mutmut 3 (a test extra): it mutates
every function of the copy, finds which of the module's tests reach each function, and
runs only those per mutant in a forked child, several mutants a second.  Its run is in
two steps so that --max-mutants can draw a sample: a first `mutmut run` filtered on a name
that matches nothing generates the mutants and the test statistics and then stops (mutmut
refuses an empty selection), the second runs the drawn names.

No tool mutates Cython, so the compiled modules (_replay, _trie, _offload, _session) have
the mutator below: operator swaps (comparisons, + -, & |, << >>, and/or, augmented
assignments), constants (n -> n+1, n-1, 0), boundaries (< <=, > >=), dropped `not`s and
True/False, and deleted statements (a simple statement becomes `pass`, `return x` returns
0, NULL or None).  Each mutant is compiled alone (setup.py's WGC_ONLY) into the copy and
the module's fast tests are run against it with a time limit.  A mutant that does not
compile is `invalid` and counts for nothing.

A mutant is killed when its tests fail (a crash counts), survives when they pass, and
times out when they hang; the survival rate is survived / (killed + survived + timeout).
mutmut's "no tests" (no chosen test reaches the function) counts as survived.  Survivors
are printed as file:line (file:line:column for the compiled modules) with the change, then
a table per module; the last line is JSON.
"""
import argparse
import ast
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parent.parent

# Each module and the fast tests that stand for it (seconds each, no namespaces).
MODULES: dict[str, tuple[str, list[str]]] = {
    "noise": ("wgc/noise.py", ["tests/test_noise.py", "tests/test_vectors_noise.py", "tests/test_protocol.py",
                               "tests/test_limits.py"]),
    "cookie": ("wgc/cookie.py", ["tests/test_cookie.py", "tests/test_noise.py", "tests/test_protocol.py",
                                 "tests/test_limits.py"]),
    "uapi": ("wgc/uapi.py", ["tests/test_uapi.py"]),
    "_replay": ("wgc/_replay.pyx", ["tests/test_replay.py", "tests/test_protocol.py"]),
    "_trie": ("wgc/_trie.pyx", ["tests/test_trie.py"]),
    "_offload": ("wgc/_offload.pyx", ["tests/test_offload.py", "tests/test_port.py", "tests/test_udp_plan.py"]),
    "_session": ("wgc/_session.pyx", ["tests/test_protocol.py", "tests/test_limits.py"]),
}
# Not copied: the repository, build output, caches (mutmut's own work directory included).
SKIP_COPY = shutil.ignore_patterns(".git", "build", "dist", ".venv", "mutants", "__pycache__", ".hypothesis",
                                   ".pytest_cache", ".mypy_cache", ".ruff_cache", ".benchmarks")
PYTEST = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
BUILD_TIMEOUT = 600
NO_MATCH = "no-mutant-is-named-this"


@dataclass
class Mutant:
    line: int           # 1-based
    start: int          # column span replaced in that line
    end: int
    new: str
    what: str           # e.g. "'<' -> '<='"
    status: str = ""

    def apply(self, lines: list[str]) -> str:
        text = lines[self.line - 1]
        mutated = list(lines)
        mutated[self.line - 1] = text[: self.start] + self.new + text[self.end:]
        return "".join(mutated)


@dataclass
class Result:
    module: str
    path: str
    mutants: list[Mutant]

    def count(self, status: str) -> int:
        return sum(m.status == status for m in self.mutants)

    def rate(self) -> float:
        judged = self.count("killed") + self.count("survived") + self.count("timeout")
        return self.count("survived") / judged if judged else 0.0


def copy_worktree(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=SKIP_COPY, symlinks=True)
    return dest


def sample(items: list, limit: int, seed: int) -> list:
    """A fixed-seed sample (in the original order), so that runs with the same N are comparable."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    chosen = set(random.Random(seed).sample(range(len(items)), limit))
    return [item for i, item in enumerate(items) if i in chosen]


# ---- the Cython mutator ----------------------------------------------------------------------

_CAST = re.compile(r"<[A-Za-z_][\w ]*\**>")
_STRING = re.compile(r"\"[^\"]*\"|'[^']*'")
_SWAPS = {
    " < ": [" <= ", " >= "], " <= ": [" < ", " > "], " > ": [" >= ", " <= "], " >= ": [" > ", " < "],
    " == ": [" != "], " != ": [" == "], " + ": [" - "], " - ": [" + "], " & ": [" | "], " | ": [" & "],
    " << ": [" >> "], " >> ": [" << "], " and ": [" or "], " or ": [" and "],
    " += ": [" -= "], " -= ": [" += "], " |= ": [" &= "], " &= ": [" |= "],
}
_OPERATOR = re.compile("|".join(re.escape(op) for op in sorted(_SWAPS, key=len, reverse=True)))
_NUMBER = re.compile(r"(?<![\w.])(0x[0-9a-fA-F]+|\d+)(u?)(?![\w.])")
_WORD = re.compile(r"\b(True|False|not )")
_BLOCK = re.compile(r"(if|elif|else|while|for|try|except|finally|with|return|break|continue|pass|raise|"
                    r"cdef|cpdef|def|class|ctypedef|from|import|cimport|@)\b")
_CONSTANT = re.compile(r"[A-Z][A-Z0-9_]* = ")     # an enum member or module constant: deleting it cannot compile
_HEADER = re.compile(r"^(?:cdef|cpdef)\s+(?:inline\s+)?(?:const\s+)?([\w ]*?\**)\s*\w+\(")


def _mask(code: str) -> str:
    """code with casts and strings blanked out, columns kept, so operators inside them are not touched."""
    for pattern in (_STRING, _CAST):
        code = pattern.sub(lambda m: " " * len(m.group()), code)
    return code


def _depth_change(code: str) -> int:
    return sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")


def pyx_mutants(source: str) -> list[Mutant]:
    """Every mutant of a .pyx source, in line order."""
    mutants: list[Mutant] = []
    lines = source.splitlines(keepends=True)
    depth = 0                  # open brackets carried over from earlier lines
    in_docstring = False
    skip_statement = False     # the statement being continued is a header or an import
    return_kind = "0"          # what a deleted `return x` returns in the current function
    for number, text in enumerate(lines, 1):
        stripped = text.strip()
        if in_docstring or stripped.startswith(('"""', "'''")):
            quotes = stripped.count('"""') + stripped.count("'''")
            in_docstring = in_docstring != (quotes % 2 == 1)
            continue
        code = text.split("#", 1)[0].rstrip()
        if not code.strip():
            continue
        continued = depth > 0
        depth = max(depth + _depth_change(_mask(code)), 0)
        if not continued:
            body = code.strip()
            skip_statement = bool(re.match(r"(from|import|cimport|def|class|cdef class|ctypedef|@)\b", body))
            header = _HEADER.match(body)
            if header:
                skip_statement = True
                return_type = header.group(1) if header else ""
                return_kind = "NULL" if "*" in return_type else ("pass" if "void" in return_type else "0")
            elif body.startswith("def "):
                return_kind = "None"
        if skip_statement:
            continue
        first = len(code) - len(code.lstrip())
        if code.lstrip().startswith("cdef "):      # a declaration: only its initialiser is code
            if " = " not in code:
                continue
            first = code.index(" = ") + 3
        masked = _mask(code)
        for m in _OPERATOR.finditer(masked, first):
            for new in _SWAPS[m.group()]:
                mutants.append(Mutant(number, m.start(), m.end(), new, f"{m.group().strip()!r} -> {new.strip()!r}"))
        for m in _NUMBER.finditer(masked, first):
            value = int(m.group(1), 0)
            for changed in dict.fromkeys([value + 1, value - 1, 0] if value else [1]):
                if changed >= 0 and changed != value:
                    literal = f"{changed}{m.group(2)}"
                    mutants.append(Mutant(number, m.start(1), m.end(), literal, f"{m.group()} -> {literal}"))
        for m in _WORD.finditer(masked, first):
            new = {"True": "False", "False": "True", "not ": ""}[m.group()]
            mutants.append(Mutant(number, m.start(), m.end(), new, f"{m.group().strip()!r} -> {new or 'dropped'!r}"))
        if continued or depth:
            continue
        body = code.strip()
        returned = re.match(r"return\s+(.+)$", body)
        if returned and returned.group(1) not in ("0", "NULL", "None", "False", "True"):
            new = "pass" if return_kind == "pass" else f"return {return_kind}"
            mutants.append(Mutant(number, first, len(code), new, f"{body!r} -> {new!r}"))
        elif not _BLOCK.match(body) and not body.endswith(":") and not _CONSTANT.match(body):
            mutants.append(Mutant(number, first, len(code), "pass", f"{body!r} deleted"))
    return mutants


class PyxRunner:
    """Builds and tests mutants of one compiled module, each worker in its own copy of the worktree."""

    def __init__(self, name: str, path: str, tests: list[str], copies: list[Path]):
        self.name, self.path, self.tests = name, path, tests
        self.copies: Queue[Path] = Queue()
        for copy in copies:
            self.copies.put(copy)
        self.source = (ROOT / path).read_text()
        self.lines = self.source.splitlines(keepends=True)
        self.test_timeout = 60.0

    def _run(self, copy: Path, args: list[str], timeout: float, env: dict | None = None) -> int | None:
        """Exit status, or None after killing the process group at the timeout."""
        proc = subprocess.Popen([sys.executable, *args], cwd=copy, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None

    def _build(self, copy: Path, source: str) -> bool:
        (copy / self.path).write_text(source)
        env = dict(os.environ, WGC_ONLY=self.name)
        return self._run(copy, ["setup.py", "-q", "build_ext", "--inplace"], BUILD_TIMEOUT, env) == 0

    def baseline(self) -> None:
        """The unmutated module must build and pass its tests in every copy; their time sets the limit."""
        copies = [self.copies.get() for _ in range(self.copies.qsize())]
        for copy in copies:
            if not self._build(copy, self.source):
                sys.exit(f"{self.path} does not build in {copy}")
            start = time.monotonic()
            if self._run(copy, [*PYTEST, *self.tests], 600) != 0:
                sys.exit(f"{self.name}: the tests fail before any mutation ({' '.join(self.tests)})")
            self.test_timeout = max(self.test_timeout, 10 * (time.monotonic() - start))
            self.copies.put(copy)

    def judge(self, mutant: Mutant) -> None:
        copy = self.copies.get()
        try:
            if not self._build(copy, mutant.apply(self.lines)):
                mutant.status = "invalid"
                return
            code = self._run(copy, [*PYTEST, *self.tests], self.test_timeout)
            mutant.status = "timeout" if code is None else ("survived" if code == 0 else "killed")
        finally:
            self.copies.put(copy)

    def restore(self) -> None:
        """Puts the unmutated module back into every copy (for the modules tested after it)."""
        copies = [self.copies.get() for _ in range(self.copies.qsize())]
        for copy in copies:
            if not self._build(copy, self.source):
                sys.exit(f"{self.path} does not rebuild in {copy}")


def run_pyx(name: str, path: str, tests: list[str], copies: list[Path], limit: int, seed: int) -> Result:
    runner = PyxRunner(name, path, tests, copies)
    mutants = sample(pyx_mutants(runner.source), limit, seed)
    runner.baseline()
    done = 0
    lock = threading.Lock()

    def work(chunk: list[Mutant]) -> None:
        nonlocal done
        for mutant in chunk:
            runner.judge(mutant)
            with lock:
                done += 1
                print(f"  {name} {done}/{len(mutants)} {path}:{mutant.line} {mutant.what}: {mutant.status}",
                      file=sys.stderr, flush=True)

    jobs = len(copies)
    threads = [threading.Thread(target=work, args=(mutants[i::jobs],)) for i in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runner.restore()
    return Result(name, path, mutants)


# ---- the Python modules through mutmut -------------------------------------------------------

_STATUS = {"killed": "killed", "survived": "survived", "no tests": "survived", "timeout": "timeout",
           "segfault": "killed", "suspicious": "timeout", "caught by type check": "killed",
           "not checked": "", "skipped": ""}


def _mutmut(copy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=copy, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


def _function_lines(source: str) -> dict[str, int]:
    """The def line of every function and method, under mutmut's mangled name (x_f, xǁClassǁf)."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[f"x_{node.name}"] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[f"x\u01c1{node.name}\u01c1{item.name}"] = item.lineno
    return found


def _describe(diff: str, source: list[str], def_line: int) -> tuple[int, str]:
    """The source line a mutmut diff of one function changes, and the change.  The line is
    found by its text from the function's def on: mutmut's copy of a function drops its
    comments, so the diff's own line numbers drift."""
    removed, added = [], []
    for text in diff.splitlines():
        if text.startswith("-") and not text.startswith("---"):
            removed.append(text[1:].strip())
        elif text.startswith("+") and not text.startswith("+++"):
            added.append(text[1:].strip())
    line = next((number for number in range(max(def_line, 1), len(source) + 1)
                 if removed and source[number - 1].strip() == removed[0]), def_line)
    return line, f"{' '.join(removed)!r} -> {' '.join(added)!r}"


def run_python(name: str, path: str, tests: list[str], copy: Path, limit: int, seed: int, jobs: int) -> Result:
    shutil.rmtree(copy / "mutants", ignore_errors=True)
    pyproject = copy / "pyproject.toml"
    base = pyproject.read_text().split("\n[tool.mutmut]\n")[0]
    pyproject.write_text(base + "\n[tool.mutmut]\n" + f"source_paths = [{json.dumps(path)}]\n"
                         f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
                         'also_copy = ["wgc", "tests"]\n'
                         'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n')
    _mutmut(copy, "run", "--max-children", str(jobs), NO_MATCH)     # generates; refuses the empty selection
    meta = copy / "mutants" / (path + ".meta")
    if not meta.exists():
        sys.exit(f"mutmut generated no mutants for {path} (is mutmut 3 installed? pip install -e '.[test]')")
    names = sample(sorted(json.loads(meta.read_text())["exit_code_by_key"]), limit, seed)
    run = _mutmut(copy, "run", "--max-children", str(jobs), *names)
    if run.returncode != 0:
        sys.exit(f"mutmut run failed for {path}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    statuses = {}
    for text in _mutmut(copy, "results", "--all", "true").stdout.splitlines():
        key, _, status = text.strip().rpartition(": ")
        statuses[key] = status
    source = (copy / path).read_text()
    functions = _function_lines(source)
    mutants = []
    for key in names:
        status = _STATUS.get(statuses.get(key, "not checked"), "")
        function = key.split(".")[-1].rsplit("__mutmut_", 1)[0]
        line, what = 0, key
        if status == "survived":
            line, what = _describe(_mutmut(copy, "show", key).stdout, source.splitlines(), functions.get(function, 0))
        mutants.append(Mutant(line, 0, 0, "", what, status or "invalid"))
    return Result(name, path, mutants)


# ---- report ------------------------------------------------------------------------------------

def report(results: list[Result]) -> None:
    for result in results:
        survivors = [m for m in result.mutants if m.status == "survived"]
        print(f"== {result.module}: {len(survivors)} survivors")
        lines = (ROOT / result.path).read_text().splitlines()
        for m in sorted(survivors, key=lambda m: m.line):
            code = lines[m.line - 1].strip() if 0 < m.line <= len(lines) else ""
            column = f":{m.start + 1}" if m.end else ""     # the compiled modules' mutants know theirs
            print(f"{result.path}:{m.line}{column}: {m.what}    [{code}]")
    print(f"{'module':10} {'mutants':>7} {'killed':>7} {'survived':>8} {'timeout':>7} {'invalid':>7} {'survival':>8}")
    for r in results:
        print(f"{r.module:10} {len(r.mutants):7} {r.count('killed'):7} {r.count('survived'):8} "
              f"{r.count('timeout'):7} {r.count('invalid'):7} {100 * r.rate():7.1f}%")
    print(json.dumps({r.module: {"mutants": len(r.mutants), "killed": r.count("killed"),
                                 "survived": r.count("survived"), "timeout": r.count("timeout"),
                                 "invalid": r.count("invalid"), "survival": round(r.rate(), 4)}
                      for r in results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES),
                        help="a module to mutate (repeatable; default: all)")
    parser.add_argument("--max-mutants", type=int, default=0, help="a fixed-seed sample of N per module (0: all)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--jobs", type=int, default=1, help="mutants judged at once")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))    # so that the copies are removed
    results = []
    with tempfile.TemporaryDirectory(prefix="wgc-mutate-") as tmp:
        copies = [copy_worktree(Path(tmp) / f"copy{i}") for i in range(max(args.jobs, 1))]
        for name in args.module or list(MODULES):
            path, tests = MODULES[name]
            print(f"-- {name}: {path} against {' '.join(tests)}", file=sys.stderr, flush=True)
            if path.endswith(".pyx"):
                results.append(run_pyx(name, path, tests, copies, args.max_mutants, args.seed))
            else:
                results.append(run_python(name, path, tests, copies[0], args.max_mutants, args.seed, args.jobs))
    report(results)


if __name__ == "__main__":
    main()
