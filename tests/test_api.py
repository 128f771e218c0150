"""The top-level API: every exported name resolves, and a training config builds from Python as from YAML."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import astra_core
from astra_core import ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_every_exported_name_resolves():
    for name in astra_core.__all__:
        assert getattr(astra_core, name) is not None, name
    assert set(astra_core.__all__) <= set(dir(astra_core))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        astra_core.NoSuchThing  # noqa: B018


def test_the_plugin_contract_and_every_error_type_import_from_the_top_level():
    from astra_core.data import Episode
    from astra_core.data.action_files import ActionFileError
    from astra_core.data.cache import CacheError
    from astra_core.modality import AlignedActions, Embodiment, Modality
    from astra_core.plugins import PluginError

    assert astra_core.Modality is Modality and astra_core.Embodiment is Embodiment
    assert astra_core.AlignedActions is AlignedActions and astra_core.Episode is Episode
    for error in (ActionFileError, CacheError, PluginError):
        assert getattr(astra_core, error.__name__) is error and issubclass(error, astra_core.AstraError)
        assert getattr(astra_core.errors, error.__name__) is error


def test_import_is_light_and_loads_no_plugin():
    heavy = ("astra_experts", "astra_embodiments", "h5py")
    code = f"import sys, astra_core; print(any(m.startswith({heavy!r}) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_yaml_configs_keep_anchors_and_merge_keys_and_refuse_a_key_given_twice(tmp_path):
    from astra_core.config import read_yaml_mapping

    shared = "opt: &opt {lr: 0.001, warmup_steps: 5}\noptim:\n  <<: *opt\n  lr: 0.002\nsteps: 9\n"
    (tmp_path / "merged.yaml").write_text(shared)
    assert read_yaml_mapping(tmp_path / "merged.yaml")["optim"] == {"lr": 0.002, "warmup_steps": 5}
    (tmp_path / "twice.yaml").write_text("optim:\n  lr: 0.001\n  lr: 0.002\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: .*the key 'lr' is given twice in one mapping \(line 3"):
        read_yaml_mapping(tmp_path / "twice.yaml")
    (tmp_path / "odd.yaml").write_text("? [1, 2]\n: 3\n")
    with pytest.raises(ConfigError, match=r"odd.yaml: cannot read config: found unhashable key"):
        read_yaml_mapping(tmp_path / "odd.yaml")


def test_train_config_from_dict_accepts_what_the_yaml_accepts():
    path = ROOT / "examples" / "configs" / "toy.yaml"
    from_dict = TrainConfig.from_dict(yaml.safe_load(path.read_text()), source="toy")
    assert from_dict == TrainConfig.from_yaml(path)
    assert from_dict.model.dit.dim == 192  # the `preset: tiny` form
    with pytest.raises(ConfigError, match="python config: field 'steps'"):
        TrainConfig.from_dict({"steps": 0}, source="python config")
    with pytest.raises(ConfigError, match="empty"):
        TrainConfig.from_dict({}, source="python config")
