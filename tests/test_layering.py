"""The package's folders are its architecture: every import of a ddpm module points down the
layers, nothing imports in a circle, and no module uses another's private names.

The imports are read from the source (module-level and function-level alike), so the test
needs nothing imported; the checks at the end import the package to see that what it exports
exists and that the math stays light.
"""

import ast
import collections
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ddpm"

# Which layers a layer's modules may import (itself included). Read top to bottom, this is the
# order of README's code map: a layer imports only layers listed before it.
ALLOWED = {
    "configs": {"configs"},
    "diffusion": {"diffusion"},
    "runtime": {"runtime"},
    "kernels": {"kernels", "runtime"},
    "models": {"models", "diffusion", "kernels"},
    "data": {"data", "runtime"},
    "pipelines": {"pipelines", "diffusion", "models", "data", "runtime"},
    "evaluation": {"evaluation", "diffusion", "models", "data", "runtime", "pipelines"},
    "visualization": {"visualization", "diffusion", "data"},
    "training": {"training", "diffusion", "models", "data", "runtime", "pipelines", "evaluation"},
    "jobs": {"jobs", "diffusion", "kernels", "models", "data", "runtime", "pipelines",
             "evaluation", "visualization", "training"},
    "main": {"jobs", "runtime", "configs"},
    "ddpm": {"runtime"},  # ddpm/__init__.py: the XLA flags; the rest is loaded lazily (API).
}
# Modules of ddpm/jobs/ that the jobs share; a job imports no other job.
SHARED_JOB_MODULES = {"ddpm.jobs.config_validation", "ddpm.jobs.restore", "ddpm.jobs.editing"}
# What the math may import from outside the package: arrays and the standard library.
MATH_THIRD_PARTY = {"jax", "numpy"}
# The one function-level import of a ddpm module: main defers importing the jobs (and so JAX)
# until jax.distributed.initialize has run.
FUNCTION_LEVEL = {("ddpm.main", "ddpm.jobs")}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
  parts = module.split(".")
  if len(parts) == 1:
    return "ddpm"
  return parts[1] if parts[1] in ALLOWED else parts[1].removesuffix(".py")


def is_package(module: str) -> bool:
  return MODULES[module].name == "__init__.py"


def resolve(importer: str, node: ast.ImportFrom) -> str:
  """The absolute module name an ImportFrom node imports from."""
  if node.level == 0:
    return node.module
  base = importer.split(".")
  base = base if is_package(importer) else base[:-1]
  base = base[:len(base) - node.level + 1]
  return ".".join(base + ([node.module] if node.module else []))


Import = collections.namedtuple("Import", "importer imported names line function_level")


def imports_of(module: str) -> list[Import]:
  """Every import of a ddpm module in `module`: `from ddpm.x import y` counts as an import of
  ddpm.x.y when that is a module, else of ddpm.x (with y among the names)."""
  tree = ast.parse(MODULES[module].read_text())
  at_module_level = {id(n) for n in tree.body}
  out = []
  for node in ast.walk(tree):
    top = id(node) in at_module_level
    if isinstance(node, ast.Import):
      out += [Import(module, a.name, (), node.lineno, not top) for a in node.names
              if a.name.split(".")[0] == "ddpm"]
    elif isinstance(node, ast.ImportFrom):
      source = resolve(module, node)
      if source.split(".")[0] != "ddpm":
        continue
      for a in node.names:
        sub = f"{source}.{a.name}"
        if sub in MODULES:
          out.append(Import(module, sub, (), node.lineno, not top))
        else:
          out.append(Import(module, source, (a.name,), node.lineno, not top))
  return out


ALL_IMPORTS = [imp for m in MODULES for imp in imports_of(m)]


def test_the_package_has_the_layers_of_the_code_map():
  layers = {layer(m) for m in MODULES}
  assert layers == set(ALLOWED), layers ^ set(ALLOWED)
  for name in ALLOWED:
    if name not in ("main", "ddpm"):
      assert f"ddpm.{name}" in MODULES, f"ddpm/{name}/__init__.py is missing"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_points_down_the_layers(module):
  for imp in imports_of(module):
    assert imp.imported in MODULES, f"{module}:{imp.line} imports {imp.imported}, which does not exist"
    src, dst = layer(module), layer(imp.imported)
    assert dst in ALLOWED[src], (
        f"{module}:{imp.line} imports {imp.imported}: layer {src!r} may import only "
        f"{sorted(ALLOWED[src])}")


def test_no_job_imports_another_job():
  for imp in ALL_IMPORTS:
    if layer(imp.importer) == "jobs" and imp.importer != "ddpm.jobs":
      if layer(imp.imported) == "jobs":
        assert imp.imported in SHARED_JOB_MODULES, (
            f"{imp.importer}:{imp.line} imports the job {imp.imported}; jobs share only "
            f"{sorted(SHARED_JOB_MODULES)}")
    if imp.importer in SHARED_JOB_MODULES and layer(imp.imported) == "jobs":
      assert imp.imported in SHARED_JOB_MODULES, f"{imp.importer} imports {imp.imported}"


def test_there_are_no_import_cycles():
  graph = collections.defaultdict(set)
  for imp in ALL_IMPORTS:
    if imp.imported != imp.importer:
      graph[imp.importer].add(imp.imported)
  # A package's __init__ importing its own modules is the package's table of contents, not a
  # cycle: a module that imports a sibling "through" the package (from ddpm.x import y) needs
  # the package initialised, which Python does first.
  for m in list(graph):
    graph[m] = {d for d in graph[m] if not (is_package(d) and m.startswith(d + "."))}
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == "open":
        cycle = stack[stack.index(d):] + [d]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(MODULES):
    if m not in state:
      visit(m)


def test_no_function_level_imports_hide_a_dependency():
  hidden = {(imp.importer, imp.imported) for imp in ALL_IMPORTS if imp.function_level}
  assert hidden <= FUNCTION_LEVEL, sorted(hidden - FUNCTION_LEVEL)


def test_no_module_uses_another_modules_private_names():
  for imp in ALL_IMPORTS:
    for name in imp.names:
      assert not name.startswith("_"), f"{imp.importer}:{imp.line} imports {imp.imported}.{name}"
  for module, path in MODULES.items():
    tree = ast.parse(path.read_text())
    aliases = {}  # local name -> ddpm module it is bound to
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and resolve(module, node).split(".")[0] == "ddpm":
        for a in node.names:
          if f"{resolve(module, node)}.{a.name}" in MODULES:
            aliases[a.asname or a.name] = f"{resolve(module, node)}.{a.name}"
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases and node.attr.startswith("_")):
        pytest.fail(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")


def test_the_math_imports_only_arrays_and_the_standard_library():
  for module, path in MODULES.items():
    if layer(module) != "diffusion":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
      for name in names:
        top = name.split(".")[0]
        assert (top in MATH_THIRD_PARTY or top == "ddpm" or top in sys.stdlib_module_names), (
            f"{module} imports {name}; the math imports only {sorted(MATH_THIRD_PARTY)} and "
            f"the standard library")


def test_exported_names_exist_and_main_lists_every_job():
  import ddpm  # pylint: disable=import-outside-toplevel
  from ddpm import jobs, main  # pylint: disable=import-outside-toplevel
  for name in ddpm.__all__:
    assert getattr(ddpm, name) is not None, name
  for sub in ddpm.SUBPACKAGES:
    package = getattr(ddpm, sub)
    assert package.__doc__, f"ddpm.{sub} has no docstring"
    for name in getattr(package, "__all__", ()):
      assert hasattr(package, name), f"ddpm.{sub}.__all__ names {name}, which it lacks"
  assert main.MODES == tuple(jobs.JOBS)


def test_importing_the_math_pulls_in_no_flax_orbax_or_tensorflow(tmp_path):
  code = ("import sys, ddpm.diffusion\n"
          "heavy = [m for m in ('flax', 'orbax', 'tensorflow', 'tensorflow_datasets', 'optax')\n"
          "         if m in sys.modules]\n"
          "assert not heavy, heavy\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
