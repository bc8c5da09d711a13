"""Surgical edits of docker-compose.yml: add or remove one `NAME: ${NAME}` entry in a service's
environment, leaving every other byte as it was.

Why text edits guided by PyYAML's node positions rather than a round-trip YAML library: a
round-trip dump (ruamel.yaml) re-indents sequences, may re-quote scalars and rewrites flow
collections, so "the only diff is the added lines" cannot be guaranteed; inserting one line at a
position PyYAML reports keeps comments, anchors, merge keys, quoting and line endings exactly.
"""

from __future__ import annotations

import re

from posthog_compose.errors import OperatorError


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _mapping_get(node, key: str):
    for key_node, value_node in getattr(node, "value", []) or []:
        if getattr(key_node, "value", None) == key:
            return key_node, value_node
    return None, None


def _service_node(text: str, service: str):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    root = yaml.compose(text, Loader=loader)
    _, services = _mapping_get(root, "services")
    if services is None:
        raise OperatorError("docker-compose.yml: has no `services` mapping")
    key, node = _mapping_get(services, service)
    if node is None:
        raise OperatorError(f"docker-compose.yml: has no service {service!r}")
    return key, node


def _last_line(key_node, value_node) -> int:
    """0-based last line of one mapping entry. An alias value (`<<: *anchor`) resolves to a node
    defined elsewhere, so its own line is the key's."""
    if value_node.start_mark.line < key_node.start_mark.line:
        return key_node.start_mark.line
    end = value_node.end_mark
    return end.line if end.column > 0 else end.line - 1


def add_environment_entry(text: str, service: str, name: str) -> str:
    """``text`` with ``NAME: ${NAME}`` added to ``service``'s environment."""
    newline = _newline(text)
    lines = text.splitlines(keepends=True)
    service_key, service_node = _service_node(text, service)
    env_key, env = _mapping_get(service_node, "environment")
    entry = f"{name}: ${{{name}}}"

    if env is None:  # no environment yet: a new block after the service's last entry
        first_key = service_node.value[0][0]
        indent = first_key.start_mark.column
        step = indent - service_key.start_mark.column
        last = max(_last_line(k, v) for k, v in service_node.value)
        block = f"{' ' * indent}environment:{newline}{' ' * (indent + step)}{entry}{newline}"
        return _insert_after(lines, last, block, newline)

    if env.start_mark.line < env_key.start_mark.line or (
            env.start_mark.line == env_key.start_mark.line and
            lines[env_key.start_mark.line][env_key.end_mark.column:].lstrip(": \t").startswith("*")):
        raise OperatorError(f"docker-compose.yml: {service}.environment is an alias (*anchor); write it as a "
                            "mapping with `<<: *anchor` first, or add the variable to the anchor itself")

    if getattr(env, "flow_style", False):  # {A: x} or [A=x]: insert before the closing bracket
        offset = _offset(lines, env.end_mark.line, env.end_mark.column) - 1
        closing = text[offset]
        # Braces are indicators inside flow collections: the reference must be quoted there.
        item = f'{name}: "${{{name}}}"' if closing == "}" else f'"{name}=${{{name}}}"'
        before = text[:offset].rstrip()
        separator = "" if before.endswith(("{", "[")) else ", "
        return text[:len(before)] + separator + item + text[len(before):]

    if env.tag.endswith(":seq"):
        first = env.value[0]
        dash = lines[first.start_mark.line].index("-")
        last = _last_line(first, env.value[-1]) if env.value else env_key.start_mark.line
        return _insert_after(lines, last, f"{' ' * dash}- {name}=${{{name}}}{newline}", newline)

    if not env.value:
        raise OperatorError(f"docker-compose.yml: {service}.environment is empty; write `environment:` with one entry first")
    indent = env.value[0][0].start_mark.column
    last = max(_last_line(k, v) for k, v in env.value)
    return _insert_after(lines, last, f"{' ' * indent}{entry}{newline}", newline)


def _offset(lines: list[str], line: int, column: int) -> int:
    return sum(len(l) for l in lines[:line]) + column


def _insert_after(lines: list[str], index: int, block: str, newline: str) -> str:
    head = lines[: index + 1]
    if head and not head[-1].endswith(("\n", "\r")):
        head[-1] += newline
    return "".join(head) + block + "".join(lines[index + 1:])


def remove_environment_entries(text: str, name: str) -> str:
    """``text`` without any ``NAME: ${NAME}`` entry this module added (block, list or flow style),
    and without an `environment:` header left empty by the removal."""
    quoted = re.escape(name)
    block = re.compile(rf"^[ \t]*(- {quoted}=\$\{{{quoted}\}}|{quoted}: \$\{{{quoted}\}})[ \t]*\r?\n?$")
    flow_item = rf'({quoted}: "\$\{{{quoted}\}}"|"{quoted}=\$\{{{quoted}\}}")'
    flow = re.compile(rf",\s*{flow_item}|{flow_item}(,\s*)?")
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    for line in lines:
        if block.match(line):
            if kept and kept[-1].strip() == "environment:" and not _continues(lines, line, kept[-1]):
                kept.pop()
            continue
        if f"${{{name}}}" in line and ("{" in line or "[" in line):
            line = flow.sub("", line, count=1)
        kept.append(line)
    return "".join(kept)


def _continues(lines: list[str], removed: str, header: str) -> bool:
    """Whether the environment block under ``header`` has other entries after ``removed``."""
    index = lines.index(removed)
    indent = len(header) - len(header.lstrip())
    following = lines[index + 1] if index + 1 < len(lines) else ""
    return bool(following.strip()) and (len(following) - len(following.lstrip())) > indent
