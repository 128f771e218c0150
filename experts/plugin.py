"""Registers the built-in modalities through the `astra` hooks (entry point `experts`)."""

from astra_core.plugins import hookimpl

from .camera import CameraSE3
from .categorical import AtariAction, DiscreteAction
from .discrete import DiscreteCommand
from .robot import RobotEE
from .vector import BoxAction
from .vehicle import VehiclePose


@hookimpl
def astra_register_modalities(register):
    for modality in (
        CameraSE3(),
        VehiclePose(),
        RobotEE(),
        DiscreteCommand(),
        AtariAction(),
        DiscreteAction(),
        BoxAction(),
    ):
        register(modality)
