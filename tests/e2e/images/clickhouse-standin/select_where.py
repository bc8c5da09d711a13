"""`WHERE column = literal [AND ...]` for the ClickHouse STAND-IN's `SELECT count() FROM table WHERE ...` (test
only): what an operator's check asks of the events table, e.g. `invoke probe`'s
`WHERE team_id = 1 AND event = '...' AND distinct_id = '...'`. Equality with a quoted string or an integer,
joined by AND; anything else is not understood (the caller answers SYNTAX_ERROR)."""
import re

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
LITERAL = r"'(?:[^'\\]|\\.)*'|-?\d+"
CONDITION = re.compile(rf"({NAME})\s*=\s*({LITERAL})")
SEPARATOR = re.compile(r"\s+AND\s+", re.I)


def parse(clause):
    """[(column, value as text)] of ``clause``, or None when it is not column = literal joined by AND. Read
    left to right, so an AND inside a quoted literal is part of the literal."""
    text, position, conditions = clause.strip(), 0, []
    while True:
        match = CONDITION.match(text, position)
        if not match:
            return None
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.S)
        conditions.append((match.group(1), value))
        position = match.end()
        if position == len(text):
            return conditions
        separator = SEPARATOR.match(text, position)
        if not separator:
            return None
        position = separator.end()


def unescape(cell):
    """A TabSeparated cell back to its text."""
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n"}.get(m.group(1), m.group(1)), cell)


def matches(column_names, line, conditions):
    cells = [unescape(cell) for cell in line.split("\t")]
    values = dict(zip(column_names, cells))
    return all(values.get(column) == value for column, value in conditions)
