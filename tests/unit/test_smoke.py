import json

from gateway_core.errors import ErrorCode, GatewayError


def test_gateway_error_renders_spec_json() -> None:
    response = GatewayError(404, ErrorCode.ROUTE_NOT_FOUND, "No route").to_response(request_id="abc")
    assert response.status_code == 404
    assert json.loads(response.content) == {
        "error": {"code": "route_not_found", "message": "No route", "request_id": "abc"}
    }
