"""Genotypes as validated data: the DARTS `Genotype` namedtuple and the NB201 cell string."""

from __future__ import annotations

import ast
import json
import re
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# `noise` only exists in the RobustDARTS S4 space.
DARTS_ALL_OPS = DARTS_OPS + ("noise",)
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# The DARTS RNN cell's activations (quark0/darts rnn/genotypes.py PRIMITIVES).
DARTS_RNN_OPS = ("none", "tanh", "relu", "sigmoid", "identity")
DARTS_RNN_STEPS = 8
# The two-input backbone's candidates g(a, b) (ours, docs/METHODS.md 5): a the previous node,
# b the second source; `none` is optional in the search and never derived.
PAIR_RNN_OPS = ("none", "hadamard", "add", "gate", "tanh", "relu", "identity")
# Where node k's second input b comes from: s0 (the highway node), `previous` (node k-2, s0
# for k < 3) or `hidden` (h_{t-1}, the cell's previous output).
PAIR_RNN_SECONDS = ("s0", "previous", "hidden")
# What the cell outputs: the mean of its nodes, or the last node.
PAIR_RNN_OUTPUTS = ("mean", "last")


class GenotypeError(ValueError):
    """A genotype that is not well formed; the message says what is wrong."""


Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")


def validate_darts(g: Genotype, steps: int | None = None, ops=DARTS_ALL_OPS) -> Genotype:
    """Check a DARTS genotype; return it with lists normalised. Raises GenotypeError.

    `none` is allowed (an edge that contributes nothing): the DARTS rule never picks it, but
    single-path methods such as EN²AS can, and the final network builds it as a zero op.
    """
    out = {}
    for kind in ("normal", "reduce"):
        edges = getattr(g, kind)
        if not isinstance(edges, list | tuple) or len(edges) == 0 or len(edges) % 2:
            raise GenotypeError(
                f"{kind}: expected a list of (op, input) pairs, two per node, got {edges!r}"
            )
        n_nodes = len(edges) // 2
        if steps is not None and n_nodes != steps:
            raise GenotypeError(
                f"{kind}: has {n_nodes} nodes ({len(edges)} edges), the space has {steps}"
            )
        norm = []
        for k, e in enumerate(edges):
            if not isinstance(e, list | tuple) or len(e) != 2:
                raise GenotypeError(f"{kind}[{k}]: expected (op, input), got {e!r}")
            op, inp = e
            node = k // 2
            if op not in ops:
                raise GenotypeError(f"{kind}[{k}]: unknown op {op!r}; allowed: {', '.join(ops)}")
            if isinstance(inp, bool) or not isinstance(inp, int) or not 0 <= inp < node + 2:
                raise GenotypeError(
                    f"{kind}[{k}]: input {inp!r} of intermediate node {node} must be an "
                    f"int in [0, {node + 1}] (0,1 = cell inputs, 2.. = earlier nodes)"
                )
            norm.append((op, inp))
        concat = list(getattr(g, kind + "_concat"))
        if not concat or any(
            isinstance(c, bool) or not isinstance(c, int) or not 2 <= c < n_nodes + 2
            for c in concat
        ):
            raise GenotypeError(
                f"{kind}_concat: {concat!r} must list node indices in [2, {n_nodes + 1}]"
            )
        out[kind] = norm
        out[kind + "_concat"] = concat
    return Genotype(**out)


def darts_to_json(g: Genotype) -> dict:
    """The JSON form: {"normal": [[op, input], ...], "normal_concat": [...], ...}."""
    g = validate_darts(g)
    return {
        "normal": [list(e) for e in g.normal],
        "normal_concat": list(g.normal_concat),
        "reduce": [list(e) for e in g.reduce],
        "reduce_concat": list(g.reduce_concat),
    }


def darts_from_json(d: dict) -> Genotype:
    """Inverse of darts_to_json, with validation."""
    if not isinstance(d, dict):
        raise GenotypeError(
            f"expected a JSON object with normal/reduce keys, got {type(d).__name__}"
        )
    missing = [k for k in Genotype._fields if k not in d]
    extra = [k for k in d if k not in Genotype._fields]
    if missing or extra:
        raise GenotypeError(
            f"DARTS genotype keys must be exactly {list(Genotype._fields)}; "
            f"missing {missing}, unexpected {extra}"
        )
    for k in Genotype._fields:
        if not isinstance(d[k], list):
            raise GenotypeError(f"{k}: expected a JSON list, got {d[k]!r}")
    return validate_darts(
        Genotype(
            normal=[tuple(e) if isinstance(e, list) else e for e in d["normal"]],
            normal_concat=d["normal_concat"],
            reduce=[tuple(e) if isinstance(e, list) else e for e in d["reduce"]],
            reduce_concat=d["reduce_concat"],
        )
    )


_RANGE = re.compile(r"range\(\s*(\d+)\s*,\s*(\d+)\s*\)")


def darts_from_string(s: str) -> Genotype:
    """Parse the printed namedtuple form `Genotype(normal=[('sep_conv_3x3', 0), ...], ...)`."""
    s = s.strip()
    if not s.startswith("Genotype(") or not s.endswith(")"):
        raise GenotypeError("expected text of the form Genotype(normal=[...], normal_concat=...)")
    body = _RANGE.sub(lambda m: repr(list(range(int(m[1]), int(m[2])))), s[len("Genotype(") : -1])
    try:
        call = ast.parse(f"f({body})", mode="eval").body
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as e:
        raise GenotypeError(f"cannot parse genotype text: {e}") from None
    return darts_from_json(
        {
            k: [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, list) else v
            for k, v in kwargs.items()
        }
    )


@dataclass(frozen=True)
class NB201Genotype:
    """A NAS-Bench-201 cell: ops[k] is the op of edge k in string order
    (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""

    ops: tuple[str, ...]

    EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from, to), string order

    def __post_init__(self):
        if len(self.ops) != 6:
            raise GenotypeError(f"an NB201 cell has 6 edges, got {len(self.ops)} ops")
        for k, op in enumerate(self.ops):
            if op not in NB201_OPS:
                raise GenotypeError(
                    f"edge {self.EDGES[k][0]}->{self.EDGES[k][1]}: unknown op {op!r}; "
                    f"allowed: {', '.join(NB201_OPS)}"
                )

    def to_string(self) -> str:
        """The NB201 arch string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
        o = self.ops
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    @classmethod
    def from_string(cls, s: str) -> NB201Genotype:
        """Parse and validate an NB201 arch string."""
        s = s.strip()
        nodes = s.split("+")
        if len(nodes) != 3:
            raise GenotypeError(
                f"NB201 string {s!r} must have 3 nodes separated by '+', "
                "like |op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
            )
        try:
            ops = []
            for i, node in enumerate(nodes, start=1):
                if not (node.startswith("|") and node.endswith("|")):
                    raise GenotypeError(f"node {i} {node!r} must start and end with '|'")
                parts = node[1:-1].split("|")
                if len(parts) != i:
                    raise GenotypeError(f"node {i} must have {i} inputs, got {len(parts)}")
                for j, p in enumerate(parts):
                    op, sep, src = p.partition("~")
                    if not sep or src != str(j):
                        raise GenotypeError(f"node {i}, input {j}: expected 'op~{j}', got {p!r}")
                    ops.append(op)
            return cls(tuple(ops))
        except GenotypeError as e:
            raise GenotypeError(f"NB201 string {s!r}: {e}") from None

    def to_json(self) -> dict:
        """JSON form: {"arch": "<nb201 string>"}."""
        return {"arch": self.to_string()}

    @classmethod
    def from_json(cls, d: dict) -> NB201Genotype:
        """Inverse of to_json."""
        if not isinstance(d, dict) or set(d) != {"arch"} or not isinstance(d["arch"], str):
            raise GenotypeError('NB201 genotype JSON must be {"arch": "|op~0|+...|"}')
        return cls.from_string(d["arch"])

    def __str__(self) -> str:
        return self.to_string()


RNNGenotype = namedtuple("RNNGenotype", "recurrent concat")


def validate_rnn(g: RNNGenotype, steps: int | None = DARTS_RNN_STEPS) -> RNNGenotype:
    """Check a DARTS RNN genotype (one (op, input) pair per node, input j < node's index, j = 0
    the highway node s0); return it with lists normalised. Raises GenotypeError."""
    edges = g.recurrent
    if not isinstance(edges, list | tuple) or len(edges) == 0:
        raise GenotypeError(f"recurrent: expected a list of (op, input) pairs, got {edges!r}")
    if steps is not None and len(edges) != steps:
        raise GenotypeError(f"recurrent: has {len(edges)} nodes, the space has {steps}")
    norm = []
    for i, e in enumerate(edges):
        if not isinstance(e, list | tuple) or len(e) != 2:
            raise GenotypeError(f"recurrent[{i}]: expected (op, input), got {e!r}")
        op, inp = e
        if op not in DARTS_RNN_OPS or op == "none":
            allowed = ", ".join(o for o in DARTS_RNN_OPS if o != "none")
            raise GenotypeError(f"recurrent[{i}]: unknown op {op!r}; allowed: {allowed}")
        if isinstance(inp, bool) or not isinstance(inp, int) or not 0 <= inp <= i:
            raise GenotypeError(
                f"recurrent[{i}]: input {inp!r} of node {i + 1} must be an int in [0, {i}] "
                "(0 = the highway node s0, k = node k)"
            )
        norm.append((op, inp))
    concat = list(g.concat)
    if not concat or any(
        isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= len(edges) for c in concat
    ):
        raise GenotypeError(f"concat: {concat!r} must list node indices in [0, {len(edges)}]")
    return RNNGenotype(norm, concat)


def rnn_to_json(g: RNNGenotype) -> dict:
    """The JSON form: {"recurrent": [[op, input], ...], "concat": [...]}."""
    g = validate_rnn(g, steps=None)
    return {"recurrent": [list(e) for e in g.recurrent], "concat": list(g.concat)}


def rnn_from_json(d: dict) -> RNNGenotype:
    """Inverse of rnn_to_json, with validation."""
    if not isinstance(d, dict) or set(d) != set(RNNGenotype._fields):
        raise GenotypeError(
            f"a DARTS RNN genotype needs exactly the keys recurrent and concat, got {d!r}"
        )
    if not isinstance(d["recurrent"], list) or not isinstance(d["concat"], list):
        raise GenotypeError("recurrent and concat must be JSON lists")
    edges = [tuple(e) if isinstance(e, list) else e for e in d["recurrent"]]
    return validate_rnn(RNNGenotype(edges, d["concat"]), steps=None)


def rnn_from_string(s: str) -> RNNGenotype:
    """Parse the printed form `RNNGenotype(recurrent=[('sigmoid', 0), ...], concat=range(1, 9))`
    (also the original code's `Genotype(recurrent=..., concat=...)`)."""
    s = s.strip()
    head = "RNNGenotype(" if s.startswith("RNNGenotype(") else "Genotype("
    if not s.startswith(head) or not s.endswith(")"):
        raise GenotypeError("expected text of the form RNNGenotype(recurrent=[...], concat=...)")
    body = _RANGE.sub(lambda m: repr(list(range(int(m[1]), int(m[2])))), s[len(head) : -1])
    try:
        call = ast.parse(f"f({body})", mode="eval").body
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as e:
        raise GenotypeError(f"cannot parse genotype text: {e}") from None
    if isinstance(kwargs.get("recurrent"), list):
        kwargs["recurrent"] = [list(e) if isinstance(e, tuple) else e for e in kwargs["recurrent"]]
    return rnn_from_json(kwargs)


@dataclass(frozen=True)
class PairRNNGenotype:
    """A cell of the two-input recurrent backbone: ops[k - 1] combines node k's two inputs
    (a = s_{k-1}, b = its `second` source); the cell outputs the mean of its nodes or the
    last one (`output`)."""

    ops: tuple[str, ...]
    second: str = "s0"
    output: str = "mean"

    def __post_init__(self):
        if not isinstance(self.ops, list | tuple) or not self.ops:
            raise GenotypeError(f"ops: expected a non-empty list of op names, got {self.ops!r}")
        object.__setattr__(self, "ops", tuple(self.ops))
        allowed = ", ".join(o for o in PAIR_RNN_OPS if o != "none")
        for k, op in enumerate(self.ops, start=1):
            if op not in PAIR_RNN_OPS or op == "none":
                raise GenotypeError(f"node {k}: unknown op {op!r}; allowed: {allowed}")
        if self.second not in PAIR_RNN_SECONDS:
            raise GenotypeError(
                f"second: {self.second!r} is not a second source; allowed: "
                f"{', '.join(PAIR_RNN_SECONDS)}"
            )
        if self.output not in PAIR_RNN_OUTPUTS:
            raise GenotypeError(f"output: {self.output!r}; allowed: {', '.join(PAIR_RNN_OUTPUTS)}")

    def to_json(self) -> dict:
        """{"space": "pair_rnn", "ops": [...], "second": ..., "output": ...}."""
        return {
            "space": "pair_rnn",
            "ops": list(self.ops),
            "second": self.second,
            "output": self.output,
        }

    @classmethod
    def from_json(cls, d: dict) -> PairRNNGenotype:
        """Inverse of to_json (without the "space" tag), with validation."""
        if not isinstance(d, dict) or "ops" not in d or not set(d) <= {"ops", "second", "output"}:
            raise GenotypeError(
                f"a two-input RNN genotype needs the key ops (and optionally second, output), "
                f"got {d!r}"
            )
        return cls(d["ops"], d.get("second", "s0"), d.get("output", "mean"))

    def to_string(self) -> str:
        """The printed form, which `from_string` and `load_genotype` read."""
        ops, second, output = list(self.ops), self.second, self.output
        return f"PairRNNGenotype(ops={ops!r}, second={second!r}, output={output!r})"

    @classmethod
    def from_string(cls, s: str) -> PairRNNGenotype:
        """Parse the printed form `PairRNNGenotype(ops=[...], second='s0', output='mean')`."""
        s = s.strip()
        if not s.startswith("PairRNNGenotype(") or not s.endswith(")"):
            raise GenotypeError("expected text of the form PairRNNGenotype(ops=[...], ...)")
        try:
            call = ast.parse(f"f({s[len('PairRNNGenotype(') : -1]})", mode="eval").body
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        except (SyntaxError, ValueError) as e:
            raise GenotypeError(f"cannot parse genotype text: {e}") from None
        return cls.from_json(kwargs)

    def __str__(self) -> str:
        return self.to_string()


def genotype_to_json(g) -> dict:
    """Either genotype kind to its JSON form, tagged with its space family."""
    if isinstance(g, NB201Genotype):
        return {"space": "nb201", **g.to_json()}
    if isinstance(g, Genotype):
        return {"space": "darts", **darts_to_json(g)}
    if isinstance(g, RNNGenotype):
        return {"space": "darts_rnn", **rnn_to_json(g)}
    to_json = getattr(g, "to_json", None)
    if to_json is None:
        raise TypeError(f"not a genotype: {g!r}")
    return to_json()


def genotype_from_json(d: dict):
    """Parse a tagged genotype JSON object (as written to genotype.json)."""
    if not isinstance(d, dict) or "space" not in d:
        raise GenotypeError('genotype JSON needs a "space" key ("nb201" or "darts")')
    body = {k: v for k, v in d.items() if k != "space"}
    if d["space"] == "nb201":
        return NB201Genotype.from_json(body)
    if d["space"] == "darts":
        return darts_from_json(body)
    if d["space"] == "darts_rnn":
        return rnn_from_json(body)
    if d["space"] == "pair_rnn":
        return PairRNNGenotype.from_json(body)
    raise GenotypeError(
        f'unknown genotype space {d["space"]!r}; expected "nb201", "darts", "darts_rnn" or '
        '"pair_rnn"'
    )


def load_genotype(text_or_path: str):
    """A genotype from a published name (`DARTS_V2`, see `diffnas.spaces.published`), a path to
    genotype.json or a run directory, JSON text, an NB201 string or Genotype(...) text."""
    from diffnas.spaces.published import GENOTYPES  # it imports this module

    text = text_or_path.strip()
    if GENOTYPES.lookup(text):  # published names ignore case: darts_v2 is DARTS_V2
        return GENOTYPES.get(GENOTYPES.lookup(text)).genotype
    source = "genotype text"
    if not text.startswith(("|", "{", "Genotype(", "RNNGenotype(", "PairRNNGenotype(")):
        p = Path(text)
        if p.is_dir():
            if not (p / "genotype.json").is_file():
                raise GenotypeError(
                    f"run directory {text} has no genotype.json yet: the run did not finish "
                    "(resume it to the end), or pass a genotype.json, a published name or text"
                )
            p = p / "genotype.json"
        if not p.is_file():
            close = GENOTYPES.suggest(text)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise GenotypeError(
                f"{text!r} is not a published genotype ({', '.join(GENOTYPES.names())}), an "
                f"NB201 string, Genotype(...) text, JSON, nor an existing genotype.json or run "
                f"directory.{hint}"
            )
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise GenotypeError(f"{p} is not a text file (not UTF-8): not a genotype") from None
    text = text.strip()
    if text.startswith("|"):
        return NB201Genotype.from_string(text)
    if text.startswith("PairRNNGenotype("):
        return PairRNNGenotype.from_string(text)
    if text.startswith("RNNGenotype(") or (text.startswith("Genotype(") and "recurrent=" in text):
        return rnn_from_string(text)
    if text.startswith("Genotype("):
        return darts_from_string(text)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        if source != "genotype text":
            raise GenotypeError(
                f"{source} is not valid genotype JSON ({e.msg} at line {e.lineno} column "
                f"{e.colno}; truncated or edited?)"
            ) from None
        raise GenotypeError(
            f"not a genotype: {text[:80]!r} is neither an NB201 string, Genotype(...) text, "
            f"JSON ({e.msg}), nor a path to a genotype.json"
        ) from None
    where = "" if source == "genotype text" else f"{source}: "
    try:
        return genotype_from_json(d)
    except GenotypeError as e:
        raise GenotypeError(f"{where}{e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GenotypeError(f"{where}not a valid genotype JSON ({type(e).__name__}: {e})") from None
