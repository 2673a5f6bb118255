"""
L{ValidationErrors} reads as the original's does to a ported plugin:
C{if verrors: raise verrors}, C{add_child}, C{extend}, C{in}.
"""

from __future__ import annotations

import errno

from midjobs.errors import ValidationError, ValidationErrors


def test_an_empty_collection_is_false() -> None:
    verrors = ValidationErrors()
    assert not verrors
    verrors.add("data.name", "Required")
    assert verrors
    assert "data.name" in verrors and "data.other" not in verrors


def test_children_and_extensions() -> None:
    child = ValidationErrors()
    child.add("name", "Required")
    child.add_validation_error(ValidationError("size", "Too big", errno.E2BIG))
    verrors = ValidationErrors()
    verrors.add_child("replica.create", child)
    other = ValidationErrors([ValidationError("target", "Taken", errno.EEXIST)])
    verrors.extend(other)
    assert verrors.extra == [
        ["replica.create.name", "Required", errno.EINVAL],
        ["replica.create.size", "Too big", errno.E2BIG],
        ["target", "Taken", errno.EEXIST],
    ]
    assert "replica.create.size" in verrors
    assert "Taken" in str(verrors)
