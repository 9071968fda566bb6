"""Label sets: which names a run predicts, in which order, and how a file's label cells map to them.

A run's labels are a list of names; the model's class ``i`` is ``names[i]``. Without
``--labels`` the names come from the training file in a fixed order that does not depend on the
order of its rows (``infer_names``). Cells are matched to names by ``LabelReader``: a name, or an
integer id (the index into the names). ``--label-map`` renames cells first (``happy=positive``)
or drops their rows (``surprise=``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .errors import UserError

BINARY = ["negative", "positive"]  # 0 and 1: the default task, and every run before label sets
BINARY_ZH = ["负面", "正面"]
# Chinese names shown by the console for common label words; others are shown as they are.
ZH = {
    **dict(zip(BINARY, BINARY_ZH)),
    "neutral": "中性",
    "happy": "高兴",
    "angry": "愤怒",
    "sad": "悲伤",
    "fear": "恐惧",
    "surprise": "惊奇",
}
# Without --labels, a file of 0/1 labels with at most this share of other values is the binary
# task as before (typos, junk): the other rows are skipped and reported, not made classes.
MAX_STRAY_SHARE = 0.1


def chinese(names: list[str]) -> list[str]:
    return [ZH.get(n, n) for n in names]


def cell_key(value) -> str | None:
    """A label cell as text: 1, 1.0 and "1" are "1"; None for an empty cell or a non-label
    (a bool, a list, an object from JSON)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        return None
    key = value.strip()
    if key.endswith(".0") and _is_int(key[:-2]):  # "1.0" as written by pandas
        key = key[:-2]
    return key or None


def _is_int(key: str) -> bool:
    return key.lstrip("-").isdigit()


def parse_names(value) -> list[str] | None:
    """``--labels a,b,c`` (or repeated, or a YAML list): names in order; refused when fewer
    than two, duplicated or empty."""
    if value is None:
        return None
    if not isinstance(value, (str, list, tuple)):
        raise ValueError("labels must be names: a,b,c or a list")
    items = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in items for part in str(item).split(",")]
    if any(not n for n in names):
        raise ValueError(f"an empty label name in {','.join(names)!r}")
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise ValueError(f"label(s) named twice: {', '.join(repeated)}")
    if len(names) < 2:
        raise ValueError("a classifier needs at least two labels")
    return names


def parse_map(value) -> dict[str, str | None] | None:
    """``--label-map``: ``old=new,old2=new2,dropped=`` or a YAML file of ``old: new`` (null or
    an empty name drops the rows); a dict from a YAML config is taken as it is."""
    if value is not None and not isinstance(value, (str, dict)):
        raise ValueError("a label map is old=new,... or a YAML file of old: new")
    if value is None or isinstance(value, dict):
        pairs = value
    elif _names_a_file(str(value)):
        pairs = _map_file(Path(value))
    else:
        pairs = {}
        for part in str(value).split(","):
            if "=" not in part:
                raise ValueError(f"{part.strip()!r} is not old=new (or old= to drop its rows)")
            old, new = part.split("=", 1)
            pairs[old.strip()] = new.strip()
    if pairs is None:
        return None
    out = {}
    for old, new in pairs.items():
        key = cell_key(old)
        if key is None:
            raise ValueError(f"label map key {old!r} is not a label")
        out[key] = None if new is None or str(new).strip() == "" else str(new).strip()
    if not out:
        raise ValueError("the label map is empty")
    return out


def _names_a_file(value: str) -> bool:
    if Path(value).suffix.lower() in (".yaml", ".yml", ".json"):
        return True
    try:
        return "=" not in value and Path(value).is_file()
    except (OSError, ValueError):  # a name too long, a NUL: not a file, so a spec
        return False


def _map_file(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ValueError(f"label map file {path} does not exist")
    try:
        pairs = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"label map file {path} is not YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(pairs, dict):
        raise ValueError(f"label map file {path} must hold old: new pairs")
    return pairs


def infer_names(counts: Counter) -> list[str]:
    """Names for a file's distinct label values: 0/1 are negative/positive; other integer ids
    are kept as names in numeric order; words in Unicode (alphabetical) order."""
    keys = list(counts)
    if set(keys) <= {"0", "1"}:
        return list(BINARY)
    ints = [k for k in keys if _is_int(k)]
    if ints and len(ints) < len(keys):
        words = sorted(set(keys) - set(ints))
        raise UserError(
            f"labels mix integer ids ({', '.join(sorted(ints, key=int)[:5])}) and words "
            f"({', '.join(words[:5])}): give the names with --labels, or map them with "
            "--label-map"
        )
    return sorted(keys, key=int) if ints else sorted(keys)


def stray_binary(counts: Counter) -> bool:
    """A file of 0/1 labels with a few other values (typos, junk): the binary task."""
    binary = counts.get("0", 0) + counts.get("1", 0)
    total = sum(counts.values())
    return binary > 0 and len(counts) > 2 and total - binary <= MAX_STRAY_SHARE * total


class LabelReader:
    """Maps label cells to class ids for one label set; ``None`` for a row to drop."""

    def __init__(self, names: list[str], label_map: dict[str, str | None] | None = None):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.label_map = label_map or {}
        # integer cells index the names, unless the names are integers themselves
        self.by_position = not any(_is_int(n) for n in self.names)

    def mapped(self, key: str) -> tuple[bool, str | None]:
        """(known, name after --label-map): unknown when a map is given and lacks the key."""
        if not self.label_map:
            return True, key
        if key in self.label_map:
            return True, self.label_map[key]
        return key in self.index, key  # a value already in the target names passes

    def class_id(self, key: str) -> int | None:
        if key in self.index:
            return self.index[key]
        if self.by_position and _is_int(key) and 0 <= int(key) < len(self.names):
            return int(key)
        return None

    def describe(self) -> str:
        if self.by_position:
            return ", ".join(f"{n} ({i})" for i, n in enumerate(self.names))
        return ", ".join(self.names)
