"""Registers the built-in embodiments through the `astra` hooks (entry point `embodiments`)."""

from astra_core.modality import Embodiment
from astra_core.plugins import hookimpl

EMBODIMENTS = (
    Embodiment("free_camera", ("camera_se3",), description="a camera flying freely through a scene"),
    Embodiment("car", ("vehicle_pose",), description="a car's ego pose, camera mounted on the car"),
    Embodiment("tabletop_arm", ("robot_ee",), description="a robot arm's end-effector seen by a fixed camera"),
    Embodiment("keyboard_game", ("discrete_cmd",), description="a game camera driven by keys and mouse look"),
)


@hookimpl
def astra_register_embodiments(register):
    for embodiment in EMBODIMENTS:
        register(embodiment)
