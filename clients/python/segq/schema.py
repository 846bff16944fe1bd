"""segq's Redis names, defaults and script codes, read from their one source,
queue/scripts/schema.def (through the package's `scripts` link), plus the error names of
common/common.h's SQ_ERRORS (through the package's `common.h` link; an installed package holds
copies of both, made by the build from the links). Also builds the schema constants every Lua script starts with,
byte for byte as queue/embed_scripts.cmake does for the C side (a test compares the two)."""
import os
import re

_HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS_DIR = os.path.join(_HERE, "scripts")
SCHEMA_DEF = os.path.join(SCRIPTS_DIR, "schema.def")
COMMON_H = os.path.join(_HERE, "common.h")

_ENTRY = re.compile(r'^SQ_SCHEMA_([A-Z]+)\(([A-Z0-9_]+), *("[^"]*"|-?[0-9]+)\)')
_ERROR = re.compile(r'^ *X\(SQ_[A-Z0-9_]+, *[0-9]+, *"([a-z_]+)"')


def _parse():
    entries = []  # (kind, symbol, value), in file order
    with open(SCHEMA_DEF) as f:
        for line in f:
            if not line.startswith("SQ_SCHEMA_"):
                continue
            m = _ENTRY.match(line)
            if not m:
                raise ValueError("schema.def: cannot parse: %s" % line.rstrip())
            kind, sym, raw = m.groups()
            value = raw[1:-1] if raw.startswith('"') else int(raw)
            entries.append((kind, sym, raw, value))
    errors = []
    with open(COMMON_H) as f:
        for line in f:
            m = _ERROR.match(line)
            if m:
                errors.append(m.group(1))
    return entries, errors


_ENTRIES, ERRORS = _parse()
KEY = {s: v for k, s, _, v in _ENTRIES if k == "KEY"}
DEFAULT = {s: v for k, s, _, v in _ENTRIES if k in ("DEFAULT", "TEXT")}
CODE = {s: v for k, s, _, v in _ENTRIES if k == "CODE"}


class _Strict:
    """Names as attributes (ERR.wrong_field_type == "wrong_field_type"); a misspelt one is an
    AttributeError at once, as the Lua side's strict tables make it an error."""

    def __init__(self, names, what):
        self.__dict__.update({n: n for n in names})
        self._what = what

    def __getattr__(self, name):
        raise AttributeError("segq: no %s %s" % (self._what, name))


ERR = _Strict(ERRORS, "error code")
for _k, _s, _, _ in _ENTRIES:
    if _k not in ("KEY", "TEXT", "DEFAULT", "CODE"):
        raise ValueError("schema.def: unknown entry kind %s" % _k)


def lua_constants():
    """The text prepended to every script: KEY, DEFAULT, CODE and ERR tables (strict)."""
    def table(kind):
        return "".join("  %s = %s,\n" % (s, raw.replace('"', "'"))
                       for k, s, raw, _ in _ENTRIES if k == kind)
    text = "-- schema: generated from queue/scripts/schema.def and SQ_ERRORS (common/common.h).\n"
    text += "-- A misspelt name is an error, not a nil.\n"
    text += "local function strict(t, what)\n"
    text += ("  return setmetatable(t, {__index = function(_, k) error('segq: no ' .. what .. ' ' "
             ".. tostring(k)) end})\n")
    text += "end\n"
    text += "local KEY = strict({\n%s}, 'key')\n" % table("KEY")
    text += "local DEFAULT = strict({\n%s}, 'default')\n" % "".join(
        "  %s = %s,\n" % (s, raw.replace('"', "'")) for k, s, raw, _ in _ENTRIES if k in ("DEFAULT", "TEXT"))
    text += "local CODE = strict({\n%s}, 'code')\n" % table("CODE")
    # ERR.<code> is '<code>'; the set of codes is made only when one is asked for (error paths).
    text += "local ERR = setmetatable({}, {__index = function(t, k)\n"
    text += "  local known = {\n%s  }\n" % "".join("    %s = true,\n" % e for e in ERRORS)
    text += "  if not known[k] then error('segq: no error code ' .. tostring(k)) end\n"
    text += "  rawset(t, k, k)\n  return k\nend})\n"
    return text
