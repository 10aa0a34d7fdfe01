"""The folder list is the pipeline, and imports flow one way through it: a module never imports a layer above its own.

Every `import` counts, also one inside a function, since a lazy import ties the layers together just the same."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Lowest first. config_fields (ConfigError and the field reader) is what every layer raises and reads; the job
# configs (config, search_axes) name every component's options, so they sit above the components and below the
# code that runs a job.
LAYERS = ["gan.config_fields", "gan.shards", "gan.training", "gan.metrics", "gan.tracking",
          "gan.config|gan.search_axes", "gan.run", "gan.sweep"]


def layer_of(module: str) -> int:
    for rank, names in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in names.split("|")):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def gan_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gan":
            if node.module == "gan" or node.module.count(".") == 1 and not (REPO / "gan" /
                                                                           f"{node.module[4:]}.py").exists():
                found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from gan.shards import storage
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "gan")
    return found


def library_modules() -> dict[str, Path]:
    return {".".join(path.relative_to(REPO).with_suffix("").parts): path for path in (REPO / "gan").rglob("*.py")
            if path.name != "__init__.py"}


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{module} (layer {layer_of(module)}) imports {imported} (layer {layer_of(imported)})"
              for module, path in library_modules().items() for imported in sorted(gan_imports(path))
              if layer_of(imported) > layer_of(module)]
    assert not upward, "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check above can fail: a shards module that reaches for the worker is caught, also inside a function."""
    module = tmp_path / "reader.py"
    module.write_text("def read():\n    from gan.run.worker import build_trainer\n")
    assert gan_imports(module) == {"gan.run.worker"}
    assert layer_of("gan.run.worker") > layer_of("gan.shards.reader")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {name.split(".")[0] for node in ast.walk(tree)
            for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                         [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])}


def test_the_library_imports_neither_jobs_nor_tests_and_the_benchmarks_no_job():
    """jobs/ are entry points (tests may call their main); test tooling lives in tests/, never in gan/."""
    offenders = [f"{path.relative_to(REPO)} imports {package}" for folder, banned in (("gan", {"jobs", "tests"}),
                                                                                      ("bench", {"jobs"}))
                 for path in (REPO / folder).rglob("*.py") for package in imported_packages(path) & banned]
    assert not offenders, offenders
