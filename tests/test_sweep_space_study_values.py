"""The sweeper's search space, study handling and report callback, checked by value (fast tier).

``bincount.sweep.space`` (Hydra override syntax -> Optuna distributions, sampled values -> overrides),
``bincount.sweep.study`` (direction, storage URL masking, create/resume rules, interrupted and running
trials, ``sweep.json``) and ``bincount.sweep.callback`` (the report at the end of a multirun), each
function's branches with the exact values and messages a user sees. Real Hydra parsers, real Optuna
studies in sqlite files under tmp_path, real job dirs for the report; nothing trains.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bincount.sweep import study as study_mod  # noqa: E402
from bincount.sweep.space import SYNTAX, SearchSpace, SearchSpaceError, format_value, parse_space  # noqa: E402
from bincount.sweep.study import (ENV_STORAGE, StudyConfigError, counted_trials, default_storage,  # noqa: E402
                                  open_study, read_sweep_info, recover_interrupted, redact, report_storage,
                                  resolve_direction, running_trials, safe_url, write_sweep_info)

SYNTAX_TEXT = ("interval(a,b), tag(log, interval(a,b)), int(interval(a,b)), range(start,stop,step), "
               "choice(a,b,...) or a,b")


def parse(params=None, args=()) -> SearchSpace:
    return parse_space(params, list(args), OverridesParser.create())


def one(entry: str):
    """The distribution of a single command-line sweep entry ``key=...``."""
    key = entry.split("=", 1)[0]
    return parse(None, [entry]).distributions[key]


def space_error(params=None, args=()) -> str:
    with pytest.raises(SearchSpaceError) as err:
        parse(params, args)
    assert isinstance(err.value, ValueError)
    return str(err.value)


# ------------------------------------------------------------------------------------------------ space


def test_constants_name_the_syntax_the_messages_quote():
    assert SYNTAX == SYNTAX_TEXT
    assert issubclass(SearchSpaceError, ValueError)


@pytest.mark.parametrize("entry, expected", [
    # interval: floats, whatever the literal; log only with the tag
    ("x=interval(1,5)", FloatDistribution(1.0, 5.0)),
    ("x=interval(0.3,0.6)", FloatDistribution(0.3, 0.6)),
    ("x=interval(-1,1)", FloatDistribution(-1.0, 1.0)),  # start <= 0 is fine without log
    ("x=tag(log, interval(5e-5, 2e-3))", FloatDistribution(5e-5, 2e-3, log=True)),
    ("x=tag(log,interval(1,5))", FloatDistribution(1.0, 5.0, log=True)),
    ("x=tag(foo,interval(1,5))", FloatDistribution(1.0, 5.0)),  # another tag is not log
    # int(interval): integer bounds -> IntDistribution, log kept
    ("x=int(interval(5,20))", IntDistribution(5, 20)),
    ("x=int(interval(1,2))", IntDistribution(1, 2)),
    ("x=int(interval(1.5,5.5))", IntDistribution(1, 5)),
    ("x=tag(log,int(interval(1,5)))", IntDistribution(1, 5, log=True)),
    ("x=int(tag(log,interval(2,64)))", IntDistribution(2, 64, log=True)),
    # range: Hydra's meaning, stop excluded
    ("x=range(64,257,64)", IntDistribution(64, 256, step=64)),
    ("x=range(0,10,3)", IntDistribution(0, 9, step=3)),
    ("x=range(0,9,3)", IntDistribution(0, 6, step=3)),
    ("x=range(-2,3,2)", IntDistribution(-2, 2, step=2)),
    ("x=range(5,6)", IntDistribution(5, 5)),  # one value: start == last is not empty
    ("x=range(3)", IntDistribution(0, 2)),
    ("x=range(1.0,4.0,1.0)", IntDistribution(1, 3)),  # integral floats are integers
    # range with a fractional or negative step: the values themselves, as a categorical
    ("x=range(0,1,0.25)", CategoricalDistribution((0.0, 0.25, 0.5, 0.75))),
    ("x=range(0.5,2,0.5)", CategoricalDistribution((0.5, 1.0, 1.5))),
    ("x=range(0,1,0.3)", CategoricalDistribution((0.0, 0.3, 0.6, 0.3 * 3))),  # ceil: 4 values, not 3
    ("x=range(5,1,-1)", CategoricalDistribution((5, 4, 3, 2))),
    ("x=range(0,-4,-2)", CategoricalDistribution((0, -2))),
    # choice and the simple form
    ("x=choice(32, 64, 128)", CategoricalDistribution((32, 64, 128))),
    ("x=choice('adam','sgd')", CategoricalDistribution(("adam", "sgd"))),
    ("x=resnet50,efficientnet_b4", CategoricalDistribution(("resnet50", "efficientnet_b4"))),
    ("x=a,null", CategoricalDistribution(("a", None))),
    ("x=true,false", CategoricalDistribution((True, False))),
    ("x=1,2.5,c", CategoricalDistribution((1, 2.5, "c"))),
    ("x=choice(1)", CategoricalDistribution((1,))),
    ("x=sort(3,1,2)", CategoricalDistribution((1, 2, 3))),
])
def test_each_hydra_sweep_form_becomes_this_exact_distribution(entry, expected):
    got = one(entry)
    assert type(got) is type(expected)
    assert got == expected
    if isinstance(expected, CategoricalDistribution):  # == on choices is loose (1 == 1.0 == True)
        assert [type(c) for c in got.choices] == [type(c) for c in expected.choices]


@pytest.mark.parametrize("entry, message", [
    ("x=tag(log, interval(0, 1))", "x: tag(log, interval(0.0,1.0)) needs a start > 0"),
    ("x=tag(log,interval(-1,5))", "x: tag(log, interval(-1.0,5.0)) needs a start > 0"),
    ("x=tag(log,int(interval(0,5)))", "x: tag(log, interval(0,5)) needs a start > 0"),
    ("x=interval(2,1)", "x: interval(2.0,1.0) needs start < end"),
    ("x=interval(1,1)", "x: interval(1.0,1.0) needs start < end"),
    ("x=int(interval(5,5))", "x: interval(5,5) needs start < end"),
    ("data.img_size=range(10,10,2)", "data.img_size=range(10,10,2) is empty"),
    ("x=range(5,1,1)", "x=range(5,1,1) is empty"),
    ("x=range(5,5)", "x=range(5,5,1) is empty"),
    ("x=choice([1,2],3)", "x: choice values must be numbers, strings, booleans or null, got [1, 2]"),
    ("x=1,{b:2},[3]", "x: choice values must be numbers, strings, booleans or null, got {'b': 2}"),  # the first
])
def test_bad_entries_are_refused_with_the_key_and_the_value(entry, message):
    assert space_error(None, [entry]) == message


@pytest.mark.parametrize("entry, message", [
    ("x=range(1,1,0.5)", "x=range(1,1,0.5) is empty"),  # fractional step, no values
    ("x=range(0,5,-1)", "x=range(0,5,-1) is empty"),  # negative step going up
    ("x=range(0,1,0)", "x=range(0,1,0) is empty"),  # a zero step never ends
])
def test_an_empty_fractional_or_negative_range_is_refused_naming_the_key(entry, message):
    assert space_error(None, [entry]) == message


def test_an_unsupported_sweep_names_the_entry_once_and_the_syntax():
    assert space_error(None, ["x=glob(*)"]) == f"x=glob(*): unsupported sweep; use {SYNTAX_TEXT}"


@pytest.mark.parametrize("entry", ["x='a b',c", "x=\"a b\",c", "x=choice('a b','c')"])
def test_quoted_choices_are_their_text_in_either_sweep_form(entry):
    """``a,b`` keeps Hydra's QuotedString objects (``choice(...)`` unquotes them): both give the strings."""
    from optuna.distributions import CategoricalDistribution

    space = parse(None, [entry])
    assert space.distributions == {"x": CategoricalDistribution(["a b", "c"])}
    assert space.overrides({"x": "a b"}) == ["x=a\\ b"]


def test_an_unparsable_entry_keeps_hydras_error_and_adds_the_syntax():
    line = "optimizer.lr=choice(1,"
    with pytest.raises(Exception) as hydra_err:
        OverridesParser.create().parse_overrides([line])
    with pytest.raises(SearchSpaceError) as err:
        parse({}, [line])
    assert str(err.value) == (f"cannot parse search-space entry 'optimizer.lr=choice(1,': {hydra_err.value}. "
                              f"Valid: {SYNTAX_TEXT}")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_an_unparsable_config_param_is_named_as_a_whole_line():
    message = space_error({"a": "choice("}, [])
    assert message.startswith("cannot parse search-space entry 'a=choice(': ")
    assert message.endswith(f". Valid: {SYNTAX_TEXT}")


@pytest.mark.parametrize("params, args", [(None, []), ({}, ["model=tiny"]), (None, ["x=1", "y=2"]),
                                          ({"x": "1,2"}, ["x=3"])])  # the command line made x fixed
def test_nothing_to_search_is_an_error_naming_where_to_put_the_space(params, args):
    assert space_error(params, args) == ("nothing to search: give hydra.sweeper.params or sweep overrides "
                                         f"({SYNTAX_TEXT})")


def test_config_params_and_command_line_combine_and_the_command_line_wins_per_key():
    s = parse({"optimizer.lr": "interval(0.1, 0.2)", "seed": "3", "head": "linear,corn"},
              ["optimizer.lr=choice(0.5,0.6)", "model.pretrained=false", "+extra=a,b", "seed=4"])
    assert s.distributions == {"optimizer.lr": CategoricalDistribution((0.5, 0.6)),
                               "head": CategoricalDistribution(("linear", "corn")),
                               "+extra": CategoricalDistribution(("a", "b"))}
    assert list(s.distributions) == ["optimizer.lr", "head", "+extra"]  # first-seen order of the keys
    assert s.fixed == ["seed=4", "model.pretrained=false"]  # the command line's line, at the key's place


def test_a_sweep_in_the_config_can_be_fixed_from_the_command_line():
    s = parse({"a": "1,2", "b": "interval(0,1)"}, ["a=7"])
    assert s.distributions == {"b": FloatDistribution(0.0, 1.0)}
    assert s.fixed == ["a=7"]


def test_search_space_defaults_are_empty_and_not_shared():
    first, second = SearchSpace(), SearchSpace()
    assert (first.distributions, first.fixed) == ({}, [])
    first.distributions["x"] = FloatDistribution(0, 1)
    first.fixed.append("a=1")
    assert (second.distributions, second.fixed) == ({}, [])
    assert first.overrides({"x": 0.25}) == ["a=1", "x=0.25"]


def test_overrides_are_the_fixed_ones_then_each_parameter_in_space_order():
    s = SearchSpace({"b": FloatDistribution(0, 9), "a": IntDistribution(0, 9),
                     "name": CategoricalDistribution(["a b", "c"])},
                    ["seed=1", "model=tiny"])
    assert s.overrides({"name": "a b", "a": 3, "b": 2.0, "unused": 9}) == ["seed=1", "model=tiny", "b=2.0", "a=3",
                                                                          "name=a\\ b"]
    with pytest.raises(KeyError):
        s.overrides({"a": 3, "b": 2.0})


def test_overrides_from_a_parsed_space_parse_back_to_the_sampled_values():
    s = parse({"optimizer.lr": "tag(log, interval(5e-5, 2e-3))", "data.batch_size": "choice(32, 64)"},
              ["head.name=linear,corn", "model.pretrained=false", "trainer.max_epochs=int(interval(1,9))"])
    params = {"optimizer.lr": 1e-4, "data.batch_size": 64, "head.name": "corn", "trainer.max_epochs": 7}
    overrides = s.overrides(params)
    assert overrides == ["model.pretrained=false", "optimizer.lr=0.0001", "data.batch_size=64", "head.name=corn",
                         "trainer.max_epochs=7"]
    parsed = OverridesParser.create().parse_overrides(overrides[1:])
    assert {o.get_key_element(): o.value() for o in parsed} == params


@pytest.mark.parametrize("value, text", [
    (1.0, "1.0"), (-3.0, "-3.0"), (0.0, "0.0"), (1e15, "1000000000000000.0"), (1e16, "1e+16"), (0.5, "0.5"),
    (1e-05, "1e-05"), (2, "2"), (True, "True"), (False, "False"), (None, "null"), ("resnet50", "resnet50"),
    ("a b", "a\\ b"), ("1", "1"), ([1, 2], "[1,2]"), ({"a": 1}, "{a:1}"),
])
def test_format_value_writes_hydra_override_text(value, text):
    assert format_value(value) == text


def test_a_numpy_float_is_written_as_its_number():
    np = pytest.importorskip("numpy")
    assert [format_value(np.float64(2.0)), format_value(np.float64(0.25))] == ["2.0", "0.25"]


@pytest.mark.parametrize("value", [1.0, -3.0, 1e16, 0.5, 2, True, None, "a b", "resnet50", [1, 2]])
def test_format_value_parses_back_to_the_same_value(value):
    parsed = OverridesParser.create().parse_override(f"k={format_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


# ------------------------------------------------------------------------------------------------ study


def test_study_constants():
    assert study_mod.DIRECTIONS == ("maximize", "minimize", "auto")
    assert study_mod.MAXIMIZE == ("acc", "f1", "within_one", "precision", "recall", "auroc", "r2", "kappa")
    assert study_mod.MINIMIZE == ("loss", "rmse", "mae", "mse", "error", "nll")
    assert (study_mod.SWEEP_INFO, ENV_STORAGE) == ("sweep.json", "BINCOUNT_OPTUNA_STORAGE")
    assert issubclass(StudyConfigError, ValueError)


@pytest.mark.parametrize("leaf", ["acc", "f1", "within_one", "precision", "recall", "auroc", "r2", "kappa",
                                  "accuracy", "f1_macro"])
def test_auto_maximizes_the_score_metrics(leaf):
    assert resolve_direction("auto", f"val/{leaf}") == "maximize"
    assert resolve_direction("maximize", f"val/{leaf}") == "maximize"


@pytest.mark.parametrize("leaf", ["loss", "rmse", "mae", "mse", "error", "nll", "loss_epoch"])
def test_auto_minimizes_the_error_metrics(leaf):
    assert resolve_direction("auto", f"val/{leaf}") == "minimize"
    assert resolve_direction("minimize", f"val/{leaf}") == "minimize"


@pytest.mark.parametrize("metric, direction", [("rmse", "minimize"), ("acc", "maximize"),
                                               ("train/acc_x/loss", "minimize"),
                                               ("loss/acc", "maximize"), ("a/b/mae", "minimize")])
def test_only_the_last_part_of_the_metric_name_decides(metric, direction):
    assert resolve_direction("auto", metric) == direction


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_an_explicit_direction_is_kept_for_an_unknown_metric(direction):
    assert resolve_direction(direction, "val/mystery") == direction


@pytest.mark.parametrize("direction, metric, message", [
    ("up", "val/acc", "hydra.sweeper.direction='up' is not valid; valid: ['maximize', 'minimize', 'auto']"),
    ("Maximize", "val/acc", "hydra.sweeper.direction='Maximize' is not valid; valid: ['maximize', 'minimize', 'auto']"),
    ("maximize", "val/rmse", "hydra.sweeper.direction='maximize' contradicts optimized_metric='val/rmse', which "
                             "should be minimized; use direction=auto or minimize"),
    ("minimize", "val/acc_top1", "hydra.sweeper.direction='minimize' contradicts optimized_metric='val/acc_top1', "
                                 "which should be maximized; use direction=auto or maximize"),
    ("auto", "val/mystery", "cannot tell whether optimized_metric='val/mystery' should be maximized or minimized "
                            "(known: ['acc', 'f1', 'within_one', 'precision', 'recall', 'auroc', 'r2', 'kappa'] up, "
                            "['loss', 'rmse', 'mae', 'mse', 'error', 'nll'] down); set "
                            "hydra.sweeper.direction=maximize or minimize"),
])
def test_bad_directions_name_the_value_and_the_valid_choices(direction, metric, message):
    with pytest.raises(StudyConfigError) as err:
        resolve_direction(direction, metric)
    assert str(err.value) == message


def test_default_storage_is_an_absolute_sqlite_file_in_the_sweep_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_storage(Path("multirun/s")) == f"sqlite:///{tmp_path.resolve()}/multirun/s/optuna.db"
    assert default_storage(tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"


@pytest.mark.parametrize("url, shown", [
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:***@h/db", "postgresql://u:***@h/db"),  # already masked
    ("mysql://u@h/db?token=abc&x=1", "mysql://u@h/db?token=***&x=1"),
    ("xyz://u:p@", "xyz://u:***@"),
    # not a URL SQLAlchemy reads: kept when it cannot hold a password, else only its scheme (or nothing)
    ("not a url", "not a url"),
    ("", ""),
    ("a://b?password=***", "a://b?password=***"),
    ("no url?password=***", "no url?password=***"),
    ("weird@thing", "***"),
    ("@", "***"),
    ("no url?password=abc", "***"),
    ("foo://a@b:c:d?x", "foo://***"),
    ("mysql://u:Sekret-1@h:notaport/db", "mysql://***"),
])
def test_safe_url_masks_passwords(url, shown):
    assert safe_url(url) == shown


@pytest.mark.parametrize("text, url, shown", [
    ("err at postgresql://u:pw-9@h/db: pw-9 rejected", "postgresql://u:pw-9@h/db",
     "err at postgresql://u:***@h/db: *** rejected"),
    # the password as written (percent-encoded) and as decoded
    ("at postgresql://u:p%40ss@h/db: p@ss and p%40ss", "postgresql://u:p%40ss@h/db",
     "at postgresql://u:***@h/db: *** and ***"),
    # a query-string password as written and as decoded (+ is a space); a URL without user password
    ("m postgresql://u@h/db?token=a+b: a+b, a b", "postgresql://u@h/db?token=a+b",
     "m postgresql://u@h/db?token=***: ***, ***"),
    ("m postgresql://u@h/db?password=a%2Bb&password=c%2Bd a+b c+d a%2Bb",
     "postgresql://u@h/db?password=a%2Bb&password=c%2Bd",
     "m postgresql://u@h/db?password=***&password=*** *** *** ***"),
    # only the credential parameters are secrets, not the other ones
    ("f at postgresql://u@h/db?password=pw-3&sslmode=disable: sslmode disable, pw-3",
     "postgresql://u@h/db?password=pw-3&sslmode=disable",
     "f at postgresql://u@h/db?password=***&sslmode=disable: sslmode disable, ***"),
    # the longer secret is hidden first, so no part of it is left over
    ("abcd then ab", "postgresql://u:ab@h/db?token=abcd", "*** then ***"),
    # nothing secret in the URL: the text is left as it is
    ("nothing at sqlite:///x.db", "sqlite:///x.db", "nothing at sqlite:///x.db"),
    ("no url here", "", "no url here"),
    # not a URL SQLAlchemy reads, holding a password: the URL is hidden whole
    ("e bad:u:pass@x", "bad:u:pass@x", "e ***"),
    ("x bad url?password=a%2Bb: a+b, a%2Bb", "bad url?password=a%2Bb", "x ***: ***, ***"),
])
def test_redact_hides_the_url_and_its_passwords(text, url, shown):
    assert redact(text, url) == shown


def test_report_storage_prefers_the_given_url_then_the_environment_for_its_own_study(monkeypatch):
    own = "postgresql://tuner:pw-1@h/optuna"
    recorded = "postgresql://tuner:***@h/optuna"
    assert report_storage(recorded, "sqlite:///given.db", env={ENV_STORAGE: own}) == "sqlite:///given.db"
    assert report_storage(recorded, None, env={ENV_STORAGE: own}) == own
    assert report_storage(recorded, "", env={ENV_STORAGE: own}) == own  # an empty --storage is not given
    assert report_storage(recorded, env={ENV_STORAGE: "postgresql://tuner:pw-2@other/optuna"}) == recorded
    assert report_storage(recorded, env={ENV_STORAGE: ""}) == recorded
    assert report_storage(recorded, env={}) == recorded
    monkeypatch.setenv(ENV_STORAGE, own)  # the default env is the process's
    assert report_storage(recorded) == own
    monkeypatch.delenv(ENV_STORAGE)
    assert report_storage(recorded) == recorded


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


DISTS = {"x": FloatDistribution(0, 1)}


def test_open_study_creates_it_with_the_sampler_pruner_and_sorted_attrs(storage):
    sampler, pruner = optuna.samplers.RandomSampler(seed=3), optuna.pruners.NopPruner()
    study = open_study(storage, "s1", "minimize", sampler, pruner, ["seed=2", "model=tiny"], ["y", "x"])
    assert (study.study_name, study.direction) == ("s1", optuna.study.StudyDirection.MINIMIZE)
    assert study.sampler is sampler and study.pruner is pruner
    assert study.user_attrs == {"fixed_overrides": ["model=tiny", "seed=2"], "search_space": ["x", "y"]}
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s1"]


def test_open_study_continues_a_study_with_the_same_fixed_overrides_in_any_order(storage):
    study = open_study(storage, "s", "maximize", None, None, ["a=1", "b=2"], ["x"])
    study.tell(study.ask(DISTS), 0.5)
    again = open_study(storage, "s", "maximize", None, None, ["b=2", "a=1"], ["z", "x"])
    assert [(t.number, t.value) for t in again.trials] == [(0, 0.5)]
    assert again.user_attrs == {"fixed_overrides": ["a=1", "b=2"], "search_space": ["x"]}  # the first run's


def test_open_study_refuses_other_fixed_overrides_naming_the_difference(storage):
    open_study(storage, "s", "maximize", None, None, ["a=1", "b=2", "c=3"], ["x"])
    with pytest.raises(StudyConfigError) as err:
        open_study(storage, "s", "maximize", None, None, ["d=4", "c=3", "b=9", "a=1"], ["x"])
    assert str(err.value) == ("study 's' was started with other fixed overrides (only then: ['b=2']; only now: "
                              "['b=9', 'd=4']). Rerun with the same overrides to continue it, or start a new study "
                              "with hydra.sweeper.study_name=NAME")
    with pytest.raises(StudyConfigError) as err:
        open_study(storage, "s", "maximize", None, None, [], ["x"])
    assert "(only then: ['a=1', 'b=2', 'c=3']; only now: [])" in str(err.value)


def test_open_study_refuses_another_direction(storage):
    open_study(storage, "s", "maximize", None, None, [], ["x"])
    with pytest.raises(StudyConfigError) as err:
        open_study(storage, "s", "minimize", None, None, [], ["x"])
    assert str(err.value) == (f"study 's' in {storage} optimises maximize, this command asks for minimize; use "
                              "another hydra.sweeper.study_name")


def test_open_study_reports_a_storage_it_cannot_open_without_the_password(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}?password=Sekret-77&timeout=Sekret-77"  # the driver quotes the value
    with pytest.raises(StudyConfigError) as err:
        open_study(url, "s", "maximize", None, None, [], ["x"])
    assert str(err.value) == (f"cannot open study 's' at sqlite:///{tmp_path / 'o.db'}?password=***&timeout=Sekret-77 "
                              "(ValueError: could not convert string to float: '***')")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_open_study_reports_an_optuna_refusal_with_its_type(storage):
    with pytest.raises(StudyConfigError) as err:
        open_study(storage, "s", "sideways", None, None, [], ["x"])
    assert re.fullmatch(rf"cannot open study 's' at {re.escape(storage)} \(ValueError: .*sideways.*\)", str(err.value))


def _study_records(caplog):
    return [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("bincount")]


def _frozen(study, number):
    return study.get_trials(deepcopy=False)[number]


def test_recover_interrupted_fails_requeues_and_warns(storage, caplog):
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.tell(study.ask(DISTS), 0.5)
    first = study.ask(DISTS)
    study.tell(study.ask(DISTS), 0.25)
    second = study.ask(DISTS)  # the driver "died" with trials 1 and 3 running
    reloaded = optuna.load_study(storage=storage, study_name="s")
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert recover_interrupted(reloaded) == 2
    assert [t.state for t in reloaded.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                                  TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    for number in (1, 3):
        assert _frozen(reloaded, number).user_attrs == {
            "interrupted": True, "fail_reason": "interrupted: the sweep driver stopped before the trial ended"}
    assert _frozen(reloaded, 0).user_attrs == {}
    assert [_frozen(reloaded, n).system_attrs["fixed_params"] for n in (4, 5)] == [first.params, second.params]
    assert _study_records(caplog) == [
        ("bincount.sweep.study", "WARNING", "Study s: 2 interrupted trial(s) marked FAIL and queued again")]
    assert reloaded.ask(DISTS).params == first.params, "the interrupted trials are retried first, in order"
    assert reloaded.ask(DISTS).params == second.params


def test_recover_interrupted_requeues_identical_params_again():
    study = optuna.create_study(study_name="s")
    study.enqueue_trial({"x": 0.5})
    study.ask(DISTS)  # running with params an earlier trial could share: it is queued anyway
    assert recover_interrupted(study) == 1
    assert [(t.state, t.system_attrs.get("fixed_params")) for t in study.trials] == [
        (TrialState.FAIL, {"x": 0.5}), (TrialState.WAITING, {"x": 0.5})]


def test_recover_interrupted_without_params_does_not_queue():
    study = optuna.create_study(study_name="s")
    study.ask()  # a trial that died before sampling anything
    assert recover_interrupted(study) == 1
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.trials[0].user_attrs["interrupted"] is True


def test_recover_interrupted_with_nothing_running_changes_nothing(caplog):
    study = optuna.create_study(study_name="s")
    study.tell(study.ask(DISTS), 0.5)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert recover_interrupted(study) == 0
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert _study_records(caplog) == []


def test_counted_trials_counts_finished_trials_except_the_interrupted():
    study = optuna.create_study(study_name="s")
    assert counted_trials(study) == 0
    study.tell(study.ask(DISTS), 0.5)  # COMPLETE
    study.tell(study.ask(DISTS), state=TrialState.PRUNED)
    study.tell(study.ask(DISTS), state=TrialState.FAIL)
    not_interrupted = study.ask(DISTS)
    not_interrupted.set_user_attr("interrupted", False)
    study.tell(not_interrupted, state=TrialState.FAIL)
    study.ask(DISTS)  # left running, then interrupted: FAIL + a WAITING copy
    recover_interrupted(study)
    study.ask(DISTS)  # the copy, now RUNNING
    study.enqueue_trial({"x": 0.1})  # WAITING
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.FAIL,
                      TrialState.RUNNING, TrialState.WAITING]
    assert counted_trials(study) == 4


def test_sweep_info_is_written_masked_and_read_back(tmp_path):
    write_sweep_info(tmp_path, "postgresql://tuner:Sekret-5@h:5432/optuna", "study-a", "minimize", "val/rmse")
    assert (tmp_path / "sweep.json").read_text() == (
        '{\n  "storage": "postgresql://tuner:***@h:5432/optuna",\n  "study_name": "study-a",\n'
        '  "direction": "minimize",\n  "optimized_metric": "val/rmse"\n}\n')
    assert read_sweep_info(tmp_path) == {"storage": "postgresql://tuner:***@h:5432/optuna", "study_name": "study-a",
                                         "direction": "minimize", "optimized_metric": "val/rmse"}


def test_read_sweep_info_without_a_file_is_none(tmp_path):
    assert read_sweep_info(tmp_path) is None
    (tmp_path / "sweep.json").mkdir()  # a directory of that name is not the file
    assert read_sweep_info(tmp_path) is None


def test_running_trials_reattach_under_their_numbers(storage, caplog):
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.tell(study.ask(DISTS), 0.1)
    left = study.ask(DISTS)
    study.tell(study.ask(DISTS), 0.2)
    study.ask(DISTS)
    reloaded = optuna.load_study(storage=storage, study_name="s")
    with caplog.at_level(logging.INFO, logger="bincount"):
        trials = running_trials(reloaded)
    assert [type(t) for t in trials] == [optuna.trial.Trial, optuna.trial.Trial]
    assert [t.number for t in trials] == [1, 3]
    assert [t._trial_id for t in trials] == [_frozen(reloaded, 1)._trial_id, _frozen(reloaded, 3)._trial_id]
    assert trials[0].params == left.params
    assert _study_records(caplog) == [
        ("bincount.sweep.study", "INFO",
         "Study s: 2 trial(s) left running by an earlier driver (1, 3): re-attaching")]
    reloaded.tell(trials[0], 0.7)  # the Trial objects belong to this study
    assert [(t.number, t.state, t.value) for t in reloaded.trials][1] == (1, TrialState.COMPLETE, 0.7)


def test_running_trials_none_left_is_quiet(caplog):
    study = optuna.create_study(study_name="s")
    study.tell(study.ask(DISTS), 0.1)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert running_trials(study) == []
    assert _study_records(caplog) == []


# --------------------------------------------------------------------------------------------- callback


def _hydra_config(sweep_dir: Path):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})


def _callback_records(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bincount.sweep.callback"]


def test_callback_writes_the_report_of_the_multirun(tmp_path, caplog, capsys):
    from bincount.sweep.callback import SweepReportCallback

    sweep = tmp_path / "multirun"
    job = sweep / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=7"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 7}))
    (job / "metrics.json").write_text(json.dumps({"objective": 0.4, "optimized_metric": "val/acc", "val/acc": 0.4}))
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert SweepReportCallback().on_multirun_end(_hydra_config(sweep)) is None
    assert (sweep / "report" / "trials.csv").read_text().splitlines() == [
        "number,status,objective,duration_s,val/acc,overrides,job_dir,reason",
        f"0,COMPLETE,0.4,,0.4,seed=7,{job},"]
    assert "Best: trial 0, val/acc = 0.4" in capsys.readouterr().out
    assert _callback_records(caplog) == []


def test_callback_warns_how_to_retry_when_the_sweep_dir_is_missing(tmp_path, caplog):
    from bincount.sweep.callback import SweepReportCallback

    missing = tmp_path / "nope"
    with caplog.at_level(logging.INFO, logger="bincount"):
        SweepReportCallback().on_multirun_end(_hydra_config(missing))  # does not raise
    assert _callback_records(caplog) == [
        ("WARNING", f"No sweep report (FileNotFoundError: sweep dir {missing} does not exist); retry with: "
                    f"bincount sweep-report {missing}")]
    assert not missing.exists()


def test_callback_warns_with_the_reports_own_error(tmp_path, caplog):
    from bincount.sweep.callback import SweepReportCallback

    (tmp_path / "sweep.json").write_text("{}")  # not written by a bincount_optuna sweep
    with caplog.at_level(logging.INFO, logger="bincount"):
        SweepReportCallback().on_multirun_end(_hydra_config(tmp_path))
    [(level, message)] = _callback_records(caplog)
    assert level == "WARNING"
    assert message.startswith(f"No sweep report (ReportError: bincount sweep-report {tmp_path}: ")
    assert message.endswith(f"); retry with: bincount sweep-report {tmp_path}")
    assert not (tmp_path / "report").exists()

