"""``TrainConfig``: everything that defines a training run, importable without torch.

Kept apart from the trainer so that the command line can build its parser
(and ``ipvae simulate`` can start) without loading torch.

Every field carries in its metadata (``setting(...)``) the group of
``ipvae train --help`` it belongs to (``GROUPS``), its help text and how its
value is checked; ``ipvae train`` makes one option per field from them, so a
new field appears on the command line by itself. ``read_config_file`` reads
the same names from a TOML or JSON file (``--config``), and
``parse_setting`` turns one value, from the command line or from a file, into
the field's type. What the settings mean: design §1.4 (training), §1.5 (the
relaxed sampler), §1.2 (clamps), §1.3 (KL).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

DECODERS = ("linear", "mlp", "conv")
KL_FORMS = ("exact", "posterior")
WIDTH_RULES = ("fixed", "quantile")
LOSS_STEPS = ("mean", "linear", "last")
RUN_INDEPENDENT = ("progress", "threads", "eval_steps", "eval_n")
"""Settings that do not change the trained parameters (free to differ on ``--resume``)."""

GROUPS = {
    "model": "the network and the starting values of its parameters",
    "loss": "what training minimises: reconstruction error plus β times the Poisson KL",
    "schedule": "the optimiser (Adamax), its learning-rate schedule and the other ramps",
    "sampler": "the relaxed Poisson counts drawn in training (evaluation always draws "
               "true counts)",
    "data": "what the model is trained on",
    "run": "seeding, threads, the evaluation at the end, output",
}
"""The groups of ``ipvae train --help``, in order, with one line on each."""

RULES = {
    # name: (test for a number, what it must be), for floats and for integers
    "finite": (math.isfinite, "be finite"),
    "positive": (lambda v: math.isfinite(v) and v > 0, "be a finite number > 0"),
    "nonnegative": (lambda v: math.isfinite(v) and v >= 0, "be a finite number >= 0"),
    "fraction": (lambda v: 0 <= v <= 1, "be a fraction in [0, 1]"),
    "unit": (lambda v: 0 <= v < 1, "lie in [0, 1)"),
}
INT_RULES = {
    "any": (lambda v: True, ""),
    "positive": (lambda v: v >= 1, "be >= 1"),
    "nonnegative": (lambda v: v >= 0, "be >= 0"),
    "seed": (lambda v: 0 <= v < 2**63, "lie in [0, 2**63)"),
}


def setting(default, group: str, help: str, *, rule: str | None = None, option: str | None = None,
            aliases: tuple = (), metavar: str | None = None, choices: tuple = (),
            words: tuple = (), shown: str | None = None):
    """A TrainConfig field with what the command line needs to offer it.

    ``group``: one of ``GROUPS``; ``help``: one line for ``--help`` (the default is
    added to it); ``rule``: a name in ``RULES`` / ``INT_RULES`` checked when the value
    is read (the default: finite for floats, any integer); ``option``: the option's
    name if not the field's name with dashes; ``aliases``: more option strings (for
    a flag, of its ``--no-`` form); ``choices``: the allowed strings; ``words``: the
    strings allowed besides a number (``float | str`` fields); ``shown``: how
    ``--help`` shows the default.
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {tuple(GROUPS)}, got {group!r}")
    return field(default=default, metadata=dict(
        group=group, help=help, rule=rule, option=option, aliases=tuple(aliases),
        metavar=metavar, choices=tuple(choices), words=tuple(words), shown=shown))


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint and the network file)."""

    data: str = setting("mnist", "data", "mnist, digits, patches, a .npy file (one input a row) "
                        "or a folder of images", metavar="SET")
    data_dir: str | None = setting(None, "data", "mnist: a folder with the full MNIST IDX files "
                                   "(instead of the embedded 5,000 digits)", metavar="DIR",
                                   shown="the embedded digits")
    rotate: float | None = setting(None, "data", "rotate every image by DEG degrees",
                                   metavar="DEG", shown="none")
    n_train: int | None = setting(None, "data", "train on the first N training inputs only",
                                  rule="positive", metavar="N", shown="all")
    latents: int = setting(512, "model", "K, the number of latent neurons", rule="positive",
                           metavar="K")
    t_train: int = setting(16, "model", "inference steps unrolled in training, T_train",
                           rule="positive", metavar="T")
    beta: float = setting(8.0, "loss", "β, the weight of the KL at T_train = --beta-t-ref",
                          rule="positive", metavar="BETA")
    kl_form: str = setting("exact", "loss", "the Poisson KL: exact, or posterior (the authors' "
                           "form, weighted by the posterior rate)", aliases=("--kl",),
                           choices=KL_FORMS)
    decoder: str = setting("linear", "model", "linear (exports to the spiking backends), mlp "
                           "or conv (Jacobian feedback)", choices=DECODERS)
    epochs: int = setting(50, "schedule", "passes over the training set", rule="positive",
                          metavar="N")
    batch: int = setting(100, "schedule", "inputs per optimiser step, over all processes",
                         rule="positive", metavar="N")
    lr: float = setting(2e-3, "schedule", "peak learning rate of Adamax", rule="positive",
                    metavar="RATE")
    lr_min: float = setting(1e-5, "schedule", "learning rate at the end of the cosine decay",
                            rule="nonnegative", metavar="RATE")
    weight_decay: float = setting(3e-4, "schedule", "Adamax weight decay", rule="nonnegative",
                                  metavar="DECAY")
    adam_betas: tuple = setting((0.9, 0.999), "schedule", "Adamax's decay rates of the moment "
                                "estimates", rule="unit", metavar=("B1", "B2"))
    adam_eps: float = setting(1e-8, "schedule", "Adamax's ε", rule="positive", metavar="EPS")
    warmup: float = setting(0.05, "schedule", "fraction of the iterations spent warming the "
                            "learning rate up linearly", rule="fraction", metavar="FRACTION")
    grad_clip: float = setting(500.0, "schedule", "largest gradient norm; larger gradients "
                               "are scaled down to it", rule="positive", metavar="NORM")
    beta_warmup: float = setting(0.1, "schedule", "fraction of the iterations over which β "
                                 "ramps up from 0", rule="fraction", metavar="FRACTION")
    temp_start: float = setting(1.0, "sampler", "temperature of the relaxed counts at the "
                                "start", rule="positive", metavar="TEMP")
    temp_stop: float = setting(0.1, "sampler", "temperature at the end of its ramp (the "
                               "authors: 0.01, at which long runs diverged here)",
                               rule="positive", metavar="TEMP")
    temp_anneal: float = setting(0.5, "sampler", "fraction of the iterations over which the "
                                 "temperature falls linearly", rule="fraction",
                                 metavar="FRACTION")
    clamp_u: float = setting(5.0, "model", "ceiling c_u of the soft clamp on the membrane "
                             "potential u (the authors: 8, 10 for a linear decoder)", metavar="C")
    clamp_du: float = setting(3.0, "model", "ceiling c_du of the soft clamp on u's increment "
                              "per step (the authors: 7, 10 for a linear decoder)", metavar="C")
    clamp_start: float = setting(2.0, "schedule", "both clamp ceilings start at this value "
                                 "and ramp up to --clamp-u and --clamp-du", metavar="C")
    clamp_anneal: float = setting(0.1, "schedule", "fraction of the iterations over which "
                                  "the clamp ceilings ramp up", rule="fraction",
                                  metavar="FRACTION")
    width: int = setting(10, "sampler", "W, the number of Poisson arrivals the relaxed "
                         "sampler draws per latent and step", rule="positive", metavar="W")
    sigma_init: float | str = setting(1.0, "model", "initial decoder σ: a number, or 'data' "
                                      "for the training set's pixel standard deviation",
                                      rule="positive", words=("data",), metavar="SIGMA")
    sigma_warmup: float = setting(0.0, "schedule", "fraction of the iterations with σ held "
                                  "at its initial value", rule="fraction", metavar="FRACTION")
    u0_init: float = setting(-2.0, "model", "the prior's potentials u0 start uniform in "
                             "U ± 1 (the authors: -5, a silent start)", metavar="U")
    fit_prior: bool = setting(True, "model", "learn the prior's potentials u0, as the "
                              "authors do (--no-fit-prior keeps their first draw)")
    beta_t_ref: float | None = setting(16.0, "loss", "β is scaled by (T_train / T)^P so that "
                                       "it keeps its meaning at other T_train; 'none': not "
                                       "scaled", rule="positive", metavar="T")
    beta_t_power: float = setting(1.0, "loss", "P, the power of that scaling: 1 weighs the "
                                  "KL summed over the unrolled steps by β/T (the KL of the "
                                  "whole path), 2 keeps a climb's averaged KL at its T's",
                                  rule="nonnegative", metavar="P")
    # issue 16's remaining differences from the authors (docs/training-ablation.md):
    width_rule: str = setting("fixed", "sampler", "how W is chosen: fixed (W = --width, plus a "
                              "Gaussian tail) or quantile (refreshed every iteration to the "
                              "Poisson 1 − 1e-3 quantile of the last iteration's largest rate)",
                              choices=WIDTH_RULES)
    separate_draws: bool = setting(False, "sampler", "score the reconstruction at each step "
                                   "with a draw of its own, not the one fed back")
    loss_steps: str = setting("last", "loss", "how the reconstruction term weighs the unrolled "
                              "steps: mean (every step alike, the authors'), linear (step t "
                              "by t), last (the last step only); the KL is summed over every "
                              "step in all three", choices=LOSS_STEPS)
    loss_ref_dim: float | None = setting(None, "loss", "scale the loss by DIM / D, D the "
                                         "input's size (the authors: 256)", rule="positive",
                                         metavar="DIM", shown="none: unscaled")
    seed: int = setting(0, "run", "seed of the initialisation, the batches and the noise",
                        rule="seed", metavar="N")
    threads: int | None = setting(None, "run", "torch threads per process", rule="positive",
                                  metavar="N", shown="torch's choice")
    time_budget: float | None = setting(None, "schedule", "minutes: fit the epochs (at most "
                                        "--epochs) to this budget and stop by it",
                                        rule="positive", metavar="MIN", shown="none")
    eval_steps: int = setting(1000, "run", "inference steps of the evaluation on the "
                              "held-out split at the end; 0: no evaluation",
                              rule="nonnegative", metavar="T")
    eval_n: int | None = setting(None, "run", "evaluate only the first N held-out inputs",
                                 rule="positive", metavar="N", shown="all")
    progress: bool = setting(True, "run", "progress bars and a line per epoch",
                             aliases=("--quiet",))

    def check(self):
        """Raise ValueError naming the first bad setting."""
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.kl_form not in KL_FORMS:
            raise ValueError(f"kl_form must be one of {KL_FORMS}, got {self.kl_form!r}")
        for name in ("latents", "t_train", "epochs", "batch", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("beta", "lr", "grad_clip", "temp_stop", "temp_start"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not (self.sigma_init == "data" or (isinstance(self.sigma_init, (int, float))
                                              and 0 < self.sigma_init < 30)):
            raise ValueError(f"sigma_init must be 'data' or a number in (0, 30), "
                             f"got {self.sigma_init!r}")
        if self.loss_steps not in LOSS_STEPS:
            raise ValueError(f"loss_steps must be one of {LOSS_STEPS}, got {self.loss_steps!r}")
        if self.width_rule not in WIDTH_RULES:
            raise ValueError(f"width_rule must be one of {WIDTH_RULES}, got {self.width_rule!r}")
        if self.loss_ref_dim is not None and not self.loss_ref_dim > 0:
            raise ValueError(f"loss_ref_dim must be > 0 (or None), got {self.loss_ref_dim}")
        if self.beta_t_ref is not None and not self.beta_t_ref > 0:
            raise ValueError(f"beta_t_ref must be > 0 (or None), got {self.beta_t_ref}")
        if not -8.0 <= self.u0_init <= 5.0:
            raise ValueError(f"u0_init must be in [-8, 5], got {self.u0_init}")
        if not 0 <= self.sigma_warmup <= 1:
            raise ValueError(f"sigma_warmup must be a fraction in [0, 1], got {self.sigma_warmup}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be > 0 minutes, got {self.time_budget}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


# --- reading settings from the command line and from files ------------------------------------

@dataclass(frozen=True)
class Setting:
    """One TrainConfig field as the command line and config files see it."""

    name: str
    kind: type                  # int, float, str, bool or tuple
    optional: bool              # None is a value ('none' on the command line and in TOML)
    default: object
    group: str
    help: str
    rule: str | None
    option: str                 # the option, e.g. '--kl-form'
    aliases: tuple
    metavar: object
    choices: tuple
    words: tuple
    shown: str | None

    @property
    def default_text(self) -> str:
        """The default as ``--help`` shows it."""
        if self.shown is not None:
            return self.shown
        d = self.default
        if isinstance(d, bool):
            return "on" if d else "off"
        if isinstance(d, tuple):
            return " ".join(format_value(v) for v in d)
        return "none" if d is None else format_value(d)


def format_value(value) -> str:
    """A setting's value as a user writes it (floats in %g form)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings() -> list[Setting]:
    """Every TrainConfig field as a Setting, in the dataclass's order.

    A field without ``setting(...)`` metadata still gets one, in the group ``run``,
    with its name as help (``tests/test_train_cli.py`` fails on such a field).
    """
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) \
            or typing.get_origin(hint) is typing.Union else (hint,)
        optional = type(None) in parts
        kinds = [p for p in parts if p is not type(None)]
        kind = typing.get_origin(kinds[0]) or kinds[0]
        if float in kinds:  # float | str: a number, or one of the setting's words
            kind = float
        m = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(Setting(
            name=f.name, kind=kind, optional=optional, default=default,
            group=m.get("group", "run"), help=m.get("help", f.name.replace("_", " ")),
            rule=m.get("rule"), option=m.get("option") or "--" + f.name.replace("_", "-"),
            aliases=m.get("aliases", ()), metavar=m.get("metavar"),
            choices=m.get("choices", ()), words=m.get("words", ()), shown=m.get("shown")))
    return out


def parse_setting(s: Setting, value, text: bool = False):
    """``value`` as setting ``s``'s type, checked against its rule and choices.

    ``text=True``: ``value`` is a command-line string; otherwise a value read from a
    TOML or JSON file (numbers must be numbers there, strings strings).  Raises
    ValueError with a one-line reason that does not name the setting (the caller does).
    """
    if s.optional and isinstance(value, str) and value.lower() == "none" and s.kind is not str:
        return None
    if value is None and s.optional and not text:
        return None
    if isinstance(value, str) and value in s.words:
        return value
    if s.kind is tuple:
        if text or not isinstance(value, (list, tuple)) or len(value) != len(s.default):
            if text:
                return _number(s, value, text, float)
            raise ValueError(f"expected a list of {len(s.default)} numbers, got {value!r}")
        return tuple(_number(s, v, False, type(d)) for v, d in zip(value, s.default))
    if s.kind in (int, float):
        return _number(s, value, text, s.kind)
    if s.kind is bool:
        if text:
            low = value.lower()
            if low in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return low in ("true", "yes", "on", "1")
        elif isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    if s.choices and value not in s.choices:
        raise ValueError(f"must be one of {', '.join(s.choices)}, got {value!r}")
    return value


def _number(s: Setting, value, text: bool, kind):
    """``value`` as an int or float (``kind``) satisfying ``s.rule``; ValueError otherwise."""
    words = "".join(f" or '{w}'" for w in s.words) + (" or 'none'" if s.optional else "")
    if kind is int:
        if text:
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"expected an integer{words}, got {value!r}") from None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ValueError(f"expected an integer{words}, got {value!r}")
        ok, must = INT_RULES[s.rule or "any"]
    else:
        if text:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"expected a number{words}, got {value!r}") from None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            raise ValueError(f"expected a number{words}, got {value!r}")
        ok, must = RULES[s.rule or "finite"]
        if not math.isfinite(number) and s.rule is None:
            ok, must = RULES["finite"]
    if not ok(number):
        raise ValueError(f"must {must}, got {value if text else format_value(number)}")
    return number


def read_config_file(path) -> dict:
    """The settings in a TOML (``.toml``) or JSON (``.json``) file, checked, by field name.

    Keys are TrainConfig's field names, with underscores or dashes, at the top level
    or inside a table named after their group (``[model] latents = 128``).  ValueError,
    one line naming the file (and the key), for an unreadable file, a syntax error, an
    unknown or repeated key, a wrong type or a bad value.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"config file {path}: must end in .toml or .json")
    if not path.exists():
        raise ValueError(f"config file {path} not found")
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"config file {path} cannot be read ({err.strerror or err})") from None
    try:
        content = raw.decode("utf-8")
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python < 3.11
                import tomli as tomllib
            table = tomllib.loads(content)
        else:
            table = json.loads(content, object_pairs_hook=_no_repeats)
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not UTF-8 text") from None
    except _Repeated as err:
        raise ValueError(f"config file {path}: {err}") from None
    except ValueError as err:  # tomllib.TOMLDecodeError and json.JSONDecodeError
        kind = "TOML" if suffix == ".toml" else "JSON"
        raise ValueError(f"config file {path} is not valid {kind}: "
                         f"{' '.join(str(err).split())}") from None
    if not isinstance(table, dict):
        raise ValueError(f"config file {path}: expected a table of settings, "
                         f"got a {type(table).__name__}")
    by_name = {s.name: s for s in settings()}
    for s in list(by_name.values()):  # an option's other spelling, e.g. kl for kl_form
        if s.kind is not bool:
            by_name.update({a.lstrip("-").replace("-", "_"): s for a in s.aliases})
    values, where = {}, {}
    for key, value, group in _entries(table, path):
        s = by_name.get(key.replace("-", "_"))
        name = s.name if s is not None else key.replace("-", "_")
        if s is None or (group is not None and s.group != group):
            if s is not None:
                raise ValueError(f"config file {path}: {key!r} belongs in [{s.group}], "
                                 f"not [{group}]")
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"config file {path}: unknown setting {key!r}{hint}")
        if name in values:
            raise ValueError(f"config file {path}: {name!r} is given twice "
                             f"(as {where[name]!r} and {key!r})")
        try:
            values[name] = parse_setting(s, value)
        except ValueError as err:
            raise ValueError(f"config file {path}: {key}: {err}") from None
        where[name] = key
    return values


def _entries(table: dict, path):
    """(key, value, group or None) of a config file's settings, group tables opened."""
    for key, value in table.items():
        if key in GROUPS and isinstance(value, dict):
            for k, v in value.items():
                yield k, v, key
        else:
            yield key, value, None


class _Repeated(ValueError):
    """A JSON object gives a key twice (TOML refuses that itself)."""


def _no_repeats(pairs):
    """json object_pairs_hook: a dict, refusing a key given twice."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Repeated(f"{key!r} is given twice")
        out[key] = value
    return out
