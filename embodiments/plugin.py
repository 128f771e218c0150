"""Registers the built-in embodiments and toy worlds through the `astra` hooks (entry point `embodiments`)."""

from astra_core.modality import Embodiment
from astra_core.plugins import hookimpl

from .readers.camera_pose import RealEstate10KReader, SpatialVIDReader
from .readers.game import GameLogReader
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
)
READERS = (
    RealEstate10KReader,
    SpatialVIDReader,
    NuScenesReader,
    RT1TFRecordReader,
    LeRobotReader,
    RobotHDF5Reader,
    GameLogReader,
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
