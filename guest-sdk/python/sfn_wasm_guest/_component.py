"""Inside the component: the ``handle`` export, made for the user's module by the entry
module that ``python3 -m sfn_wasm_guest build`` writes. Imports the bindings
componentize-py generates, so it is never imported outside a component."""

from typing import Any

import wit_world
from wit_world.imports import toolkit

from . import find_handler, run


def make_world(module: Any) -> type:
    """The ``WitWorld`` class componentize-py exports, calling ``module``'s ``@handler``."""
    fn = find_handler(module)

    class WitWorld(wit_world.WitWorld):
        def handle(self, task: Any) -> None:
            run(fn, task, toolkit)

    return WitWorld
