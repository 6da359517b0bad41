import requests


def test_live_gateway_answers_healthz(gateway_server) -> None:
    gw = gateway_server(workers=1)
    assert requests.get(gw.url + "/healthz", timeout=5).json() == {"status": "ok"}
