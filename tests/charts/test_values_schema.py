"""values.yaml, values.schema.json and the README's values table agree; bad values fail with a clear message."""

import json

import pytest
import yaml

from adept.config.chart import SCHEMA_FILE, ChartValues, render_values_schema
from adept.config.chart_docs import BEGIN, END, VALUES_FILE, parse_values_docs, render_values_table
from tests.charts.chart_render import CHART_DIR, REPO_ROOT, chart, values_for

pytestmark = pytest.mark.charts


def test_schema_file_is_generated_from_the_models():
    assert (REPO_ROOT / SCHEMA_FILE).read_text() == render_values_schema(), "run `make sync`"


def test_readme_values_table_is_generated_from_values_yaml():
    docs, _ = parse_values_docs((REPO_ROOT / VALUES_FILE).read_text())
    readme = (CHART_DIR / "README.md").read_text()
    table = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    assert render_values_table(docs) in table, "run `make sync`"


def test_every_key_is_documented():
    docs, undocumented = parse_values_docs((REPO_ROOT / VALUES_FILE).read_text())
    assert not undocumented, f"keys without a `# --` comment: {undocumented}"
    assert len(docs) > 100
    assert all(d.description for d in docs)


def test_every_model_field_is_in_values_yaml():
    """The model and the file describe the same keys (no field the docs never mention)."""
    data = yaml.safe_load((REPO_ROOT / VALUES_FILE).read_text())
    missing = []

    def walk(model, node, path):
        for name, field in model.model_fields.items():
            key = field.alias or name
            if key == "global":
                continue
            if key not in node:
                missing.append(".".join([*path, key]))
                continue
            sub = field.annotation
            nested = isinstance(sub, type) and hasattr(sub, "model_fields") and isinstance(node[key], dict)
            # Serve deployment options are ServingConfig's (documented there), not chart keys.
            if nested and "DeploymentOptions" not in [c.__name__ for c in sub.__mro__]:
                walk(sub, node[key], [*path, key])

    walk(ChartValues, data, [])
    assert not missing, missing


def test_shipped_values_validate_against_the_models(profile):
    merged = chart().merge_values(values_for(profile))
    ChartValues.model_validate(merged)


def test_shipped_values_validate_against_the_schema(profile):
    chart().validate_schema(values_for(profile))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"serving": {"gpuWorker": {"enabled": True}}}, "additional properties 'gpuWorker' not allowed"),
        (
            {"serving": {"gpuWorkers": {"gpusPerWorker": "two"}}},
            "at '/serving/gpuWorkers/gpusPerWorker': got string, want integer",
        ),
        ({"model": {"dtype": "fp8"}}, "at '/model/dtype': value must be one of"),
        (
            {"serving": {"args": {"llm": {"max_batch_siz": 8}}}},
            "additional properties 'max_batch_siz' not allowed",
        ),
        (
            {"serving": {"args": {"retrieval": {"search_mode": "fuzzy"}}}},
            "/serving/args/retrieval/search_mode",
        ),
        ({"adapterStore": {"type": "gcs"}}, "at '/adapterStore/type'"),
        ({"ingress": {"enabled": "yes"}}, "at '/ingress/enabled': got string, want boolean"),
        ({"persistence": {"size": "fifty"}}, "at '/persistence/size'"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(values, message):
    import helm_python

    with pytest.raises(helm_python.HelmValuesError) as err:
        chart().render(values, name="adept", namespace="adept")
    assert message in str(err.value)


def test_bad_values_file_is_rejected(tmp_path):
    import helm_python

    bad = tmp_path / "typo.yaml"
    bad.write_text("modelCache:\n  tpye: pvc\nserving:\n  gpuWorkers:\n    maxReplicas: lots\n")
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart().validate_schema(helm_python.values_from_yaml(bad.read_text()))
    text = str(err.value)
    assert "'tpye' not allowed" in text and "/serving/gpuWorkers/maxReplicas" in text


def test_models_catch_what_json_schema_cannot():
    """Cross-field rules live in the models (and in `adept` config loading), with the field named."""
    from pydantic import ValidationError

    merged = chart().merge_values({"serving": {"gpuWorkers": {"minReplicas": 5, "replicas": 1}}})
    with pytest.raises(ValidationError, match="minReplicas <= replicas <= maxReplicas"):
        ChartValues.model_validate(merged)


def test_schema_is_closed_except_passthrough():
    schema = json.loads((REPO_ROOT / SCHEMA_FILE).read_text())
    assert schema["additionalProperties"] is False
    sub = schema["$defs"]["SubchartToggle"]
    assert sub.get("additionalProperties", True) is not False  # subchart values pass through
