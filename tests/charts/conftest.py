import pytest

from tests.charts.chart_render import VALUES_FILES, render_objects, values_for


@pytest.fixture(scope="session", params=sorted(VALUES_FILES))
def profile(request) -> str:
    """Each shipped values file (and the defaults)."""
    return request.param


@pytest.fixture(scope="session")
def profile_objects(profile) -> list[dict]:
    return render_objects(values_for(profile))


@pytest.fixture(scope="session")
def default_objects() -> list[dict]:
    return render_objects(values_for("default"))
