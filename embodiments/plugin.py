"""Registers the built-in embodiments and toy worlds through the `astra` hooks (entry point `embodiments`)."""

from astra_core.modality import Embodiment
from astra_core.plugins import hookimpl

from .gym.adapters import ADAPTERS
from .readers.camera_pose import RealEstate10KReader, SpatialVIDReader
from .readers.game import GameLogReader
from .readers.gym_record import GymRecordReader
from .readers.lerobot import LeRobotReader
from .readers.nuscenes import NuScenesReader
from .readers.rlds import RT1TFRecordReader
from .readers.robot import RobotHDF5Reader
from .toy.worlds import WORLDS

EMBODIMENTS = (
    Embodiment("free_camera", ("camera_se3",), world="free_camera", description="a camera flying through a scene"),
    Embodiment("car", ("vehicle_pose",), world="car", description="a car's ego pose, camera mounted on the car"),
    Embodiment("tabletop_arm", ("robot_ee",), world="tabletop_arm", description="a robot arm seen by a fixed camera"),
    Embodiment("keyboard_game", ("discrete_cmd",), world="keyboard_game", description="a game camera driven by keys"),
    Embodiment("realestate10k", ("camera_se3",), reader="realestate10k", description="real-estate walkthrough videos"),
    Embodiment("nuscenes", ("vehicle_pose",), reader="nuscenes", description="nuScenes front camera and ego poses"),
    Embodiment("rt1_robot", ("robot_ee",), reader="rt1_tfrecord", description="RT-1 / Open X-Embodiment episodes"),
    Embodiment("lerobot_arm", ("robot_ee",), reader="lerobot", description="LeRobot datasets (v2.x, v3.0)"),
    Embodiment("robot_arm", ("robot_ee",), reader="robot_hdf5", description="robomimic / LIBERO demonstrations"),
    Embodiment("game_player", ("discrete_cmd",), reader="game_log", description="keyboard and mouse game logs"),
    Embodiment("spatialvid", ("camera_se3",), reader="spatialvid", description="in-the-wild videos with camera poses"),
    Embodiment(
        "atari", ("atari_action",), reader="gym_record", description="Atari games (ALE), recorded by astra record"
    ),
    Embodiment("highway", ("vehicle_pose",), reader="gym_record", description="highway-env's ego vehicle"),
    Embodiment("bullet_arm", ("robot_ee",), reader="gym_record", description="the pybullet arm astra/BulletArm-v0"),
    Embodiment("gym_discrete", ("discrete_action",), reader="gym_record", description="any Gymnasium Discrete space"),
    Embodiment("gym_box", ("box_action",), reader="gym_record", description="any Gymnasium bounded Box space"),
)
READERS = (
    RealEstate10KReader,
    SpatialVIDReader,
    NuScenesReader,
    RT1TFRecordReader,
    LeRobotReader,
    RobotHDF5Reader,
    GameLogReader,
    GymRecordReader,
)


@hookimpl
def astra_register_readers(register):
    for reader in READERS:
        register(reader())


@hookimpl
def astra_register_embodiments(register):
    for embodiment in EMBODIMENTS:
        register(embodiment)


@hookimpl
def astra_register_worlds(register):
    for world in WORLDS:
        register(world())


@hookimpl
def astra_register_env_adapters(register):
    for adapter in ADAPTERS:
        register(adapter)
