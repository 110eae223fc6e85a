"""Stand-in for ``scope.core.inputs`` (only the base class name)."""


class InputSource:
    source_id: str = ""
