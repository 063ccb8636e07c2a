"""The drawing page in a real headless Chromium: draw a digit, read the prediction."""

import pytest

from helpers.serving.browser import draw_and_read
from helpers.serving.launch import start_server
from helpers.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def server(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("browser")
    settings = ServingSettings(registry_dir=folder / "registry").to_json(folder / "settings.json")
    with start_server(settings_path=settings) as handle:
        yield handle


@pytest.mark.parametrize("digit", ["1", "7"])
def test_page_reads_drawn_digit(server, digit, tmp_path):
    shot = tmp_path / "page.png"
    result = draw_and_read(server.url, digit, screenshot=shot)
    assert result["prediction"] == digit
    assert len(result["probabilities"]) == 10
    assert shot.stat().st_size > 10_000
