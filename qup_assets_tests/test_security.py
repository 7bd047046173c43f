"""No code path may hand text to eval, exec, sympify or parse_expr: checked on the source itself."""

import ast
from pathlib import Path

import qup_assets

FORBIDDEN = {"eval", "exec", "sympify", "parse_expr", "parse_latex", "compile", "__import__"}
# As methods, only these are dangerous; `.eval()` with no argument is torch's Module.eval(), re.compile is a regex.
FORBIDDEN_METHODS = {"sympify", "parse_expr", "parse_latex"}
# (module path relative to qup_assets, function name) pairs reviewed and allowed; keep this empty if you can.
ALLOWED: set[tuple[str, str]] = set()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN:
                yield f.id, node.lineno
            elif isinstance(f, ast.Attribute) and (
                f.attr in FORBIDDEN_METHODS or (f.attr in {"eval", "exec"} and (node.args or node.keywords))
            ):
                yield f.attr, node.lineno
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name.split(".")[-1] in FORBIDDEN:
                    yield alias.name, node.lineno


def test_no_dangerous_calls_outside_the_allow_list():
    root = Path(qup_assets.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        for name, line in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            if (rel, name) not in ALLOWED:
                found.append(f"{rel}:{line}: {name}")
    assert not found, "model text must never reach these; verify through qup_assets.mathcore instead:\n" + "\n".join(found)


def test_the_check_itself_finds_calls():
    tree = ast.parse("import sympy\nfrom sympy import sympify\nx = sympy.sympify('1')\neval('2')\ndf.eval('a+b')")
    assert [n for n, _ in _calls(tree)] == ["sympify", "sympify", "eval", "eval"]
    assert list(_calls(ast.parse("model.eval()\nre.compile('x')"))) == []
