"""The ``--ros-args`` that ``launch/sorter.launch.py`` passes to pasta_node, read from the file.

``launch`` / ``launch_ros`` are not installable here, so ``ros2 launch`` cannot run. Tests and the
demo instead read the launch file with :mod:`ast` (never import it) and start the node with the
same arguments launch_ros would give it: the config file as ``--params-file``, the dict
parameters as a second params file (``/**: ros__parameters:``, as launch_ros writes them), the
remappings as ``-r from:=to``, the namespace as ``-r __ns:=/ns`` and the name as
``-r __node:=name``. Only the constructs the launch file uses are understood; anything else
raises ValueError, so a change to the file cannot silently be ignored.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class LaunchSpec:
    """What the launch file declares: arguments with defaults and descriptions, and the Node."""

    arguments: dict[str, str | None]
    descriptions: dict[str, str]
    node: dict[str, ast.expr]
    environment: dict[str, ast.expr]  # SetEnvironmentVariable(name, value) actions


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
            else None
    return None


def read_launch_file(path: str | Path) -> LaunchSpec:
    """Parse the launch file; the Node keyword arguments are kept as ast expressions."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    args: dict[str, str | None] = {}
    descriptions: dict[str, str] = {}
    node: dict[str, ast.expr] | None = None
    environment: dict[str, ast.expr] = {}
    for call in ast.walk(tree):
        name = _call_name(call)
        if name == "SetEnvironmentVariable":
            environment[ast.literal_eval(call.args[0])] = call.args[1]
        if name == "DeclareLaunchArgument":
            arg = ast.literal_eval(call.args[0])
            kw = {k.arg: k.value for k in call.keywords}
            args[arg] = kw["default_value"] if "default_value" in kw else None
            descriptions[arg] = ast.literal_eval(kw["description"]) if "description" in kw \
                else ""
        elif name == "Node":
            node = {k.arg: k.value for k in call.keywords}
    if node is None:
        raise ValueError(f"{path}: no launch_ros Node(...) found")
    return LaunchSpec(args, descriptions, node, environment)  # still ast; resolved below


def _value(expr: ast.expr, values: dict[str, str], share: Path) -> str:
    """A launch substitution expression -> its string value."""
    if isinstance(expr, ast.Constant):
        return str(expr.value)
    name = _call_name(expr)
    if name == "LaunchConfiguration":
        return values[ast.literal_eval(expr.args[0])]
    if name == "FindPackageShare":
        return str(share)
    if name == "PathJoinSubstitution":
        parts = [_value(e, values, share) for e in expr.args[0].elts]
        return str(Path(*parts))
    raise ValueError(f"unsupported launch expression: {ast.unparse(expr)}")


def _typed(text: str):
    """launch_ros types a substituted parameter value by reading it as YAML ('' stays '')."""
    value = yaml.safe_load(text) if text else ""
    return "" if value is None else value


def _argument_values(spec: LaunchSpec, path: str | Path, overrides: dict[str, str],
                     share: str | Path) -> dict[str, str]:
    unknown = set(overrides) - set(spec.arguments)
    if unknown:
        raise ValueError(f"not launch arguments of {path}: {', '.join(sorted(unknown))}")
    values: dict[str, str] = {}
    for arg, default in spec.arguments.items():
        if arg in overrides:
            values[arg] = overrides[arg]
        elif default is None:
            raise ValueError(f"launch argument {arg} has no default: give it")
        else:
            values[arg] = _value(default, values, Path(share))
    return values


def launch_environment(path: str | Path, overrides: dict[str, str],
                       share: str | Path) -> dict[str, str]:
    """The environment variables the launch file sets for the node (SetEnvironmentVariable),
    with ``overrides`` (name:=value) applied to its arguments."""
    spec = read_launch_file(path)
    values = _argument_values(spec, path, overrides, share)
    return {k: _value(v, values, Path(share)) for k, v in spec.environment.items()}


def node_command(path: str | Path, overrides: dict[str, str], share: str | Path,
                 params_dir: str | Path) -> tuple[str, list[str]]:
    """(executable, ros_args) for ``ros2 launch`` of ``path`` with ``overrides`` (name:=value).

    ``share`` stands for ``FindPackageShare(package)``: the installed share folder, which has
    the same layout as the repository (config/, launch/). The dict parameters are written to
    ``params_dir/launch_params_<i>.yaml``. The environment it sets: :func:`launch_environment`.
    """
    spec = read_launch_file(path)
    values = _argument_values(spec, path, overrides, share)
    n = spec.node
    executable = ast.literal_eval(n["executable"])
    ros_args: list[str] = []
    if "name" in n:
        ros_args += ["-r", f"__node:={_value(n['name'], values, Path(share))}"]
    namespace = _value(n["namespace"], values, Path(share)) if "namespace" in n else ""
    if namespace:
        ros_args += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for i, entry in enumerate(n.get("parameters", ast.List(elts=[])).elts):
        if isinstance(entry, ast.Dict):  # launch_ros writes each dict to a params file
            inline = {ast.literal_eval(k): _typed(_value(v, values, Path(share)))
                      for k, v in zip(entry.keys, entry.values)}
            params_file = Path(params_dir) / f"launch_params_{i}.yaml"
            params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": inline}}))
            ros_args += ["--params-file", str(params_file)]
        else:
            ros_args += ["--params-file", _value(entry, values, Path(share))]
    for pair in n.get("remappings", ast.List(elts=[])).elts:
        src, dst = (_value(e, values, Path(share)) for e in pair.elts)
        ros_args += ["-r", f"{src}:={dst}"]
    return executable, ros_args
