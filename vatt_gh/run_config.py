"""Each start's operative gin config in the run directory, and what a resume may not change.

    record(model_dir, start_step, allow_change, write)   # after the model is built, before step 1
    path = config_path(model_dir, checkpoint_step)         # the config that trained a checkpoint

Files, in <model_dir>:
  operative_config.gin            the first start's config (a start at step 0 rewrites it:
                                  nothing was trained under the one before)
  operative_config-<step>.gin     a resume after checkpoint <step> whose config differs from the
                                  previous start's (an identical resume, e.g. after a
                                  preemption, adds no file)
The checkpoints after <step> were trained under operative_config-<step>.gin; `config_path`
picks the file that trained a given checkpoint, so the evaluation tools rebuild the right model.

A resume that changes the method (Harmonization.method), the granularity
(Harmonization.granularity), the model (any build_vatt binding, the word table included) or the
data (PretrainConfig.sources / vocab_path / tokenizer, a SourceConfig's file_pattern or weight)
is a ConfigError naming each change, unless `allow_change` (pretrain.py --allow_config_change).
"""

import os
import re
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

import gin
from gin import config_parser
from vatt_gh.errors import ConfigError

FIRST = "operative_config.gin"
_NUMBERED = re.compile(r"operative_config-(\d+)\.gin$")

# (what, predicate on (selector, argument)): the bindings a resume must keep unless allowed.
WATCHED = (
    ("method", lambda sel, arg: sel == "Harmonization" and arg == "method"),
    ("granularity", lambda sel, arg: sel == "Harmonization" and arg == "granularity"),
    ("model", lambda sel, arg: sel == "build_vatt"),
    (
        "data",
        lambda sel, arg: (
            (sel == "PretrainConfig" and arg in ("sources", "vocab_path", "tokenizer"))
            or (sel == "SourceConfig" and arg in ("file_pattern", "weight"))
        ),
    ),
)


def starts(model_dir: str) -> List[Tuple[int, str]]:
    """(start step, path) of every recorded start, oldest first; [] for a new run."""
    found = []
    if tf.io.gfile.exists(os.path.join(model_dir, FIRST)):
        found.append((0, os.path.join(model_dir, FIRST)))
    if tf.io.gfile.isdir(model_dir):
        for name in tf.io.gfile.listdir(model_dir):
            match = _NUMBERED.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(model_dir, name)))
    return sorted(found)


def config_path(model_dir: str, step: Optional[int] = None) -> str:
    """The operative config that trained checkpoint `step` (None: the newest start's, which
    made the newest checkpoints). operative_config.gin's path when nothing is recorded."""
    recorded = starts(model_dir)
    if step is not None:
        recorded = [(start, path) for start, path in recorded if start < step] or recorded[:1]
    return recorded[-1][1] if recorded else os.path.join(model_dir, FIRST)


def bindings(text: str) -> Dict[Tuple[str, str, str], str]:
    """{(scope, selector, argument): value as gin writes it} of a gin text, macros resolved."""
    statements = config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True))
    found = {}
    for statement in statements:
        if isinstance(statement, config_parser.BindingStatement):
            found[(statement.scope or "", statement.selector, statement.arg_name)] = repr(
                statement.value
            )
    macros = {sel: value for (_, sel, arg), value in found.items() if not arg}
    return {
        key: macros.get(value[1:], value) if value.startswith("%") else value
        for key, value in found.items()
        if key[2]
    }


def changes(old_text: str, new_text: str) -> List[str]:
    """'what: binding old -> new' for each WATCHED binding that differs ('unset' if absent)."""
    old, new = bindings(old_text), bindings(new_text)
    keys = sorted(set(old) | set(new), key=lambda k: (k[1], k[0], k[2]))
    found = []
    for what, watched in WATCHED:  # in WATCHED's order: method, granularity, model, data
        for scope, selector, arg in keys:
            key = (scope, selector, arg)
            if watched(selector, arg) and old.get(key) != new.get(key):
                name = f"{scope + '/' if scope else ''}{selector}.{arg}"
                found.append(f"{what}: {name} {old.get(key, 'unset')} -> {new.get(key, 'unset')}")
    return found


def record(model_dir: str, start_step: int, allow_change: bool = False, write: bool = True):
    """Keep this start's operative config (see the module docstring); `write`: the chief.

    Call once the model and optimizer are built (the operative config is complete) and before
    the first step. Raises ConfigError when a resume changes a WATCHED binding, unless
    `allow_change`."""
    text = gin.operative_config_str()
    recorded = starts(model_dir)
    if start_step == 0 or not recorded:
        target = os.path.join(model_dir, FIRST)
    else:
        _, previous = recorded[-1]
        with tf.io.gfile.GFile(previous, "r") as f:
            old_text = f.read()
        changed = changes(old_text, text)
        if changed and not allow_change:
            raise ConfigError(
                f"resuming after step {start_step} with another configuration than "
                f"{os.path.basename(previous)}: {'; '.join(changed)}. Pass "
                "--allow_config_change to train on with it (each start's config is kept), or "
                "use a new --model_dir"
            )
        if text == old_text:
            return
        target = os.path.join(model_dir, f"operative_config-{start_step}.gin")
    if write:
        with tf.io.gfile.GFile(target, "w") as f:
            f.write(text)
