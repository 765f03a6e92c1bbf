"""``ipvae train``'s options and ``--config FILE``: every TrainConfig field is reachable from
the command line and from a TOML or JSON file, grouped in ``--help``; the options override the
file; bad files and values are one-line errors naming the key and the file; the resolved
configuration is stored in the network file's ``meta`` (design §3)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

import pytest

from ipvae.cli import build_parser, main
from ipvae.commands.train import resolve
from train.config import GROUPS, TrainConfig, format_value, parse_setting, settings

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def resolved(argv) -> dict:
    """The settings ``ipvae train ARGV --out r`` resolves, without training."""
    args = build_parser().parse_args(["train", *argv, "--out", "r"])
    return resolve(args)[0]


def other_value(s):
    """A valid value of setting ``s`` that is not its default (chosen from its type)."""
    if s.kind is bool:
        return not s.default
    if s.choices:
        return next(c for c in s.choices if c != s.default)
    if s.kind is tuple:
        return tuple(0.5 * v for v in s.default)
    if s.kind is str:
        return "elsewhere"
    candidates = [0.25, 3, 0.5, 2, 1, 7] if s.kind is float else [3, 7, 1, 0]
    for c in candidates:
        try:
            value = parse_setting(s, c)
        except ValueError:
            continue
        if value != s.default:
            return value
    raise AssertionError(f"no value found for {s.name}")


def as_argv(s, value) -> list[str]:
    if s.kind is bool:
        return [s.option if value else "--no-" + s.option[2:]]
    if s.kind is tuple:
        return [s.option, *(format_value(v) for v in value)]
    return [s.option, format_value(value)]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def test_every_setting_has_a_group_help_and_its_option():
    parser = train_parser()
    by_dest = {}
    for group in parser._action_groups:
        for action in group._group_actions:
            by_dest.setdefault(action.dest, []).append((group.title, action))
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("group") in GROUPS, f"{f.name} has no group (use setting())"
        assert f.metadata.get("help"), f"{f.name} has no help (use setting())"
        placed = by_dest[f.name]
        assert {title for title, _ in placed} == {f.metadata["group"]}
        options = [o for _, a in placed for o in a.option_strings]
        assert "--" + f.name.replace("_", "-") in options
        for _, action in placed:
            assert action.help and "\n" not in action.help
    # every group is used, in the order of the help, and nothing else holds a setting
    assert [g.title for g in parser._action_groups][-len(GROUPS):] == list(GROUPS)
    assert {f.metadata["group"] for f in dataclasses.fields(TrainConfig)} == set(GROUPS)


def test_every_setting_is_reachable_from_the_command_line():
    argv, expected = [], {}
    for s in settings():
        expected[s.name] = other_value(s)
        argv += as_argv(s, expected[s.name])
    given = resolved(argv)
    assert given == expected
    cfg = dataclasses.replace(TrainConfig(), **given)
    assert all(getattr(cfg, name) != getattr(TrainConfig(), name) for name in FIELDS)


def test_nothing_given_means_the_defaults_and_the_old_spellings_still_work():
    assert resolved([]) == {}  # unset settings stay unset (defaults, or the run's on --resume)
    given = resolved(["--kl", "posterior", "--quiet", "--beta-t-ref", "none",
                      "--sigma-init", "data", "--adam-betas", "0.8", "0.99"])
    assert given == dict(kl_form="posterior", progress=False, beta_t_ref=None,
                         sigma_init="data", adam_betas=(0.8, 0.99))
    assert resolved(["--no-progress"]) == dict(progress=False)
    assert resolved(["--kl-form", "exact"]) == dict(kl_form="exact")


@pytest.mark.parametrize("form", ["toml", "json", "toml-groups"])
def test_a_config_file_sets_every_setting(tmp_path, form):
    values = {s.name: other_value(s) for s in settings()}
    group = {s.name: s.group for s in settings()}
    path = tmp_path / ("cfg.json" if form == "json" else "cfg.toml")
    if form == "json":  # underscores, and null for a setting whose default is none
        content = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        values["n_train"] = content["n_train"] = None
        path.write_text(json.dumps(content))
    elif form == "toml":  # dashes
        path.write_text("".join(f"{k.replace('_', '-')} = {toml_value(v)}\n"
                                for k, v in values.items()))
    else:  # in tables named after the groups
        path.write_text("".join(f"[{g}]\n" + "".join(f"{k} = {toml_value(v)}\n"
                                                     for k, v in values.items() if group[k] == g)
                                for g in GROUPS))
    assert resolved(["--config", str(path)]) == values


def test_the_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('latents = 8\nepochs = 3\nbeta-t-ref = "none"\n[sampler]\nwidth = 5\n')
    assert resolved(["--config", str(path)]) == dict(latents=8, epochs=3, beta_t_ref=None,
                                                     width=5)
    assert resolved(["--config", str(path), "--latents", "16", "--beta-t-ref", "8"]) == \
        dict(latents=16, epochs=3, beta_t_ref=8.0, width=5)
    assert resolved(["--latents", "16", "--config", str(path)])["latents"] == 16  # any order


def refused(argv, capsys, *fragments):
    assert main(["train", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("ipvae train: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("name,content,fragments", [
    ("a.toml", "latnets = 8\n", ["unknown setting 'latnets'", "did you mean 'latents'"]),
    ("a.json", '{"colour": 1}', ["unknown setting 'colour'"]),
    ("a.toml", 'epochs = "3"\n', ["epochs: expected an integer, got '3'"]),
    ("a.toml", "epochs = 2.5\n", ["epochs: expected an integer"]),
    ("a.json", '{"latents": true}', ["latents: expected an integer, got True"]),
    ("a.json", '{"lr": "fast"}', ["lr: expected a number, got 'fast'"]),
    ("a.json", '{"kl_form": 1}', ["kl_form: expected a string"]),
    ("a.json", '{"progress": "no"}', ["progress: expected true or false"]),
    ("a.json", '{"adam_betas": [0.9]}', ["adam_betas: expected a list of 2 numbers"]),
    ("a.json", '{"latents": null}', ["latents: expected an integer"]),
    ("a.toml", "epochs = 0\n", ["epochs: must be >= 1, got 0"]),
    ("a.toml", "lr = -1.0\n", ["lr: must be a finite number > 0"]),
    ("a.toml", "warmup = 1.5\n", ["warmup: must be a fraction in [0, 1]"]),
    ("a.toml", "rotate = nan\n", ["rotate: must be finite"]),
    ("a.toml", 'kl = "kind"\n', ["kl: must be one of exact, posterior, got 'kind'"]),
    ("a.toml", "seed = -1\n", ["seed: must lie in [0, 2**63)"]),
    ("a.toml", "u0-init = 7\n", ["u0_init must be in [-8, 5]"]),  # TrainConfig.check()
    ("a.toml", "[model]\nepochs = 3\n", ["'epochs' belongs in [schedule], not [model]"]),
    ("a.toml", "t_train = 4\nt-train = 5\n", ["'t_train' is given twice"]),
    ("a.json", '{"latents": 8, "latents": 9}', ["'latents' is given twice"]),
    ("a.json", "[1, 2]", ["expected a table of settings, got a list"]),
    ("a.toml", "latents = [\n", ["is not valid TOML"]),
    ("a.json", '{"latents": 8,}', ["is not valid JSON"]),
    ("a.yaml", "latents: 8\n", ["must end in .toml or .json"]),
])
def test_bad_config_files_are_one_line_errors_naming_key_and_file(tmp_path, capsys, name,
                                                                   content, fragments):
    path = tmp_path / name
    path.write_text(content)
    refused(["--config", str(path), "--out", str(tmp_path / "run")], capsys, str(path),
            *fragments)
    assert not (tmp_path / "run").exists()


def test_missing_or_unreadable_config_files_are_named(tmp_path, capsys):
    run = ["--out", str(tmp_path / "run")]
    refused(["--config", str(tmp_path / "none.toml"), *run], capsys, "none.toml not found")
    (tmp_path / "dir.json").mkdir()
    refused(["--config", str(tmp_path / "dir.json"), *run], capsys, "dir.json is a folder")
    (tmp_path / "bin.toml").write_bytes(b"latents = \xff\n")
    refused(["--config", str(tmp_path / "bin.toml"), *run], capsys, "is not UTF-8")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.toml"
        locked.write_text("latents = 8\n")
        locked.chmod(0)
        refused(["--config", str(locked), *run], capsys, "locked.toml cannot be read")


@pytest.mark.parametrize("argv,fragment", [
    (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["--kl", "kind"], "must be one of exact, posterior"),
    (["--adam-betas", "0.9", "1"], "argument --adam-betas: must lie in [0, 1), got 1"),
    (["--adam-betas", "0.9"], "expected 2 arguments"),
    (["--threads", "none", "--latents", "none"], "--latents: expected an integer, got 'none'"),
    (["--sigma-init", "wide"], "expected a number or 'data'"),
    (["--u0-init", "7"], "--u0-init must be in [-8, 5], got 7.0"),  # TrainConfig.check()
])
def test_bad_values_on_the_command_line_are_usage_errors(tmp_path, capsys, argv, fragment):
    refused([*argv, "--out", str(tmp_path / "run")], capsys, fragment)


def test_help_shows_the_groups_in_order_with_every_option_and_default(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    heads = [text.index(f"\n{g}:\n") for g in GROUPS]
    assert heads == sorted(heads)
    for s in settings():
        start = text.index(f"\n  {s.option} ")
        group = [g for g, h in zip(GROUPS, heads) if h < start][-1]
        assert group == s.group, s.name
        if s.kind is not bool:
            entry = " ".join(text[start:start + 600].split())
            assert f"(default: {s.default_text})" in entry, s.name
    for option in ("--config FILE", "--out DIR", "--resume", "--stop-after", "--allow-collapse",
                   "--kl", "--quiet"):
        assert option in text
    usage = text[:text.index("\n\n")]
    assert "_" not in usage and "TOML" in text and "JSON" in text
    metavars = [a.metavar for a in train_parser()._actions if a.metavar]
    assert not any("_" in "".join(m) if isinstance(m, tuple) else "_" in m for m in metavars)


def test_the_resolved_config_is_stored_in_the_network_file_and_resume_keeps_its_rules(
        tmp_path, capsys):
    from networks import load_network

    config = tmp_path / "tiny.toml"
    config.write_text('data = "digits"\nn-train = 100\nlatents = 8\nt_train = 4\n'
                      "eval-steps = 0\nthreads = 1\n[schedule]\nepochs = 2\nbatch = 50\n"
                      "lr = 0.01\n[loss]\nkl = \"posterior\"\n")
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--beta", "2", "--lr", "0.02", "--quiet",
            "--allow-collapse", "--out", str(out)]
    assert main(argv + ["--stop-after", "1"]) == 0
    capsys.readouterr()
    # --resume: a setting from the file or the options that differs from the run is refused
    other = tmp_path / "other.json"
    other.write_text('{"latents": 16}')
    err = refused(["--config", str(other), "--resume", "--out", str(out)], capsys,
                  "cannot resume", "latents 16 (saved 8)")
    assert "epochs" not in err  # the settings not given are the run's own
    refused(["--resume", "--lr", "0.01", "--out", str(out)], capsys, "lr 0.01 (saved 0.02)")
    assert main(argv + ["--resume"]) == 0
    capsys.readouterr()
    expected = dataclasses.replace(TrainConfig(), data="digits", n_train=100, latents=8,
                                   t_train=4, eval_steps=0, threads=1, epochs=2, batch=50,
                                   lr=0.02, kl_form="posterior", beta=2.0, progress=False)
    meta = load_network(out / "model.npz").meta
    assert meta["config"] == expected.to_dict()
    assert sorted(meta["config"]) == sorted(FIELDS)  # every field, resolved
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == expected.to_dict() and metrics["epochs_done"] == 2


def test_a_new_field_appears_on_the_command_line_and_in_files_by_itself(monkeypatch, tmp_path):
    import train.config as config

    @dataclasses.dataclass
    class Extended(TrainConfig):
        ramp_length: float | None = config.setting(None, "schedule", "a new ramp",
                                                   rule="positive")
        plain_count: int = 3  # no setting(): offered in the run group, named after itself

    monkeypatch.setattr(config, "TrainConfig", Extended)
    assert resolved(["--ramp-length", "0.5", "--plain-count", "4"]) == dict(ramp_length=0.5,
                                                                            plain_count=4)
    path = tmp_path / "new.toml"
    path.write_text("[schedule]\nramp-length = 2\n[run]\nplain_count = 5\n")
    assert resolved(["--config", str(path)]) == dict(ramp_length=2.0, plain_count=5)
    group = {a.dest: g.title for g in train_parser()._action_groups for a in g._group_actions}
    assert group["ramp_length"] == "schedule" and group["plain_count"] == "run"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--ramp-length", "0", "--out", "r"])


@pytest.mark.parametrize("item, reason", [("bogus=1", "unknown setting 'bogus'"),
                                          ("beta=-1", "must be a finite number > 0"),
                                          ("width_rule=nope", "must be one of"),
                                          ("beta", "expected KEY=VALUE")])
def test_matrix_ablation_refuses_a_bad_setting_before_training(item, reason, capsys):
    """``python -m tests_quality.matrix CELL --set K=V`` checks K=V with the trainer's own
    parser and exits 2 naming the problem, before any training."""
    from tests_quality.matrix import main

    with pytest.raises(SystemExit) as e:
        main(["mnist-K128-T4", "--set", item])
    assert e.value.code == 2
    assert reason in capsys.readouterr().err
