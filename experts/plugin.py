"""Registers the built-in modalities through the `astra` hooks (entry point `experts`)."""

from astra_core.plugins import hookimpl

from .camera import CameraSE3
from .discrete import DiscreteCommand
from .robot import RobotEE
from .vehicle import VehiclePose


@hookimpl
def astra_register_modalities(register):
    for modality in (CameraSE3(), VehiclePose(), RobotEE(), DiscreteCommand()):
        register(modality)
