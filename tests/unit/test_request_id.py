"""Request ids: a well-formed client id is kept, anything else replaced."""

import pytest

from gateway_core.request_id import request_id_for


@pytest.mark.parametrize("value", ["abc", "A.b_c-1", "x" * 128])
def test_well_formed_client_id_is_kept(value: str) -> None:
    assert request_id_for(value) == value


@pytest.mark.parametrize("value", [None, "", "x" * 129, "has space", "semi;colon", "ünï", "a\nb"])
def test_bad_client_id_is_replaced(value: str | None) -> None:
    generated = request_id_for(value)
    assert generated != value
    assert len(generated) == 32
