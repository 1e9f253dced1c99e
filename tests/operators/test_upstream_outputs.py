"""Upstream task outputs (XComArgs), mapped arguments and templates as operator and sensor arguments.

Issue 8, item 2: TaskFlow chains tasks by passing a ``@task``'s return value (an ``XComArg``)
to the next operator. Its value is known only when the task runs, so it must not fail the DAG
import; literal values are still checked when the file is parsed, and a wrong value that
arrives from upstream fails the task at execute with the same message.

The DAG files are parsed by Airflow's own ``DagBag``, as the DAG processor does.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_provider_packly.operators.packly import (
    PacklyDielineOperator,
    PacklyOperator,
    PacklyOrdersOperator,
    PacklyQuotationOperator,
    _PacklyBaseOperator,
)
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.sensors.packly import (
    PacklyOrderProductsShippedSensor,
    PacklyOrderStatusSensor,
    PacklySensor,
    _PacklySensorBase,
)

BOX = {"article": "s020_v1", "material": "SBS300", "width": 120, "depth": 80, "height": 40}
ITEM = {**BOX, "references": [{"quantity": 500}]}

#: Each class with arguments that make it valid; the argument under test replaces one of them.
VALID: dict[type, dict[str, Any]] = {
    PacklyOperator: {"endpoint": "/v1/reseller/orders"},
    PacklyDielineOperator: {**BOX, "output_path": "/tmp/packly-test/box.pdf"},
    PacklyQuotationOperator: {"items": [ITEM]},
    PacklyOrdersOperator: {"timestamp_field": "created_at"},
    PacklyOrderStatusSensor: {"order_id": "ORD-0001"},
    PacklyOrderProductsShippedSensor: {"order_id": "ORD-0001"},
    PacklySensor: {"endpoint": "/v1/reseller/orders"},
}
CLASSES = list(VALID)


def checked_or_templated(cls: type) -> list[str]:
    names = set(cls.template_fields) | {name for rule in cls.argument_checks for name in rule.names}
    return sorted(names)


#: (class, argument): every templated or validated argument of every operator and sensor.
PAIRS = [(cls, name) for cls in CLASSES for name in checked_or_templated(cls)]


def pair_id(pair: tuple[type, str]) -> str:
    return f"{pair[0].__name__}-{pair[1]}"


# -- the DAG files, parsed once by DagBag ------------------------------------------------------------

HEADER = """\
import pendulum
from airflow.sdk import dag, task, task_group
from airflow_provider_packly.operators.packly import (
    PacklyDielineOperator, PacklyOperator, PacklyOrdersOperator, PacklyQuotationOperator)
from airflow_provider_packly.sensors.packly import (
    PacklyOrderProductsShippedSensor, PacklyOrderStatusSensor, PacklySensor)
BOX = {box!r}

@task
def upstream():
    return None
"""


def dag_source(dag_id: str, body: str) -> str:
    return (
        HEADER.format(box=BOX)
        + f"\n@dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz='UTC'),"
        + " catchup=False)\n"
        + "def the_dag():\n"
        + textwrap.indent(textwrap.dedent(body).strip(), "    ")
        + "\n\n\nthe_dag()\n"
    )


def call(cls: type, kwargs: dict[str, Any], **sources: str) -> str:
    """Source of ``cls(task_id="under_test", **kwargs)`` with some arguments given as source code."""
    arguments = [f"{name}={value!r}" for name, value in kwargs.items() if name not in sources]
    arguments += [f"{name}={source}" for name, source in sources.items()]
    return f"{cls.__name__}(task_id='under_test', {', '.join(arguments)})"


#: Whole DAG bodies beyond one argument: nested XComArgs, op.output, and mapped tasks.
SPECIAL_DAGS = {
    "nested_quantity": call(PacklyQuotationOperator, {}, items='[{**BOX, "quantity": upstream()}]'),
    "status_in_a_list": call(PacklyOrdersOperator, {}, statuses='["closed", upstream()]'),
    "item_key_of_an_xcom": call(PacklyDielineOperator, VALID[PacklyDielineOperator], width='upstream()["width"]'),
    "operator_output": """
        orders = PacklyOrdersOperator(task_id="orders", statuses=["paid"])
        PacklyQuotationOperator(task_id="quote", items=orders.output, shipping=orders.output)
        PacklyOrderStatusSensor(task_id="wait", order_id=orders.output, deferrable=True)
    """,
    "partial_expand": """
        PacklyQuotationOperator.partial(task_id="quote", shipping="IT").expand(items=upstream())
        PacklyOrderStatusSensor.partial(task_id="wait", deferrable=True).expand(order_id=upstream())
    """,
    "expand_literal_list": """
        PacklyDielineOperator.partial(task_id="dieline", article="s020_v1", material="SBS300", depth=80, height=40,
            output_path="/tmp/x.pdf").expand(width=[100, 120])
    """,
    "expand_kwargs": """
        PacklyDielineOperator.partial(task_id="dieline", output_path="/tmp/x.pdf").expand_kwargs(upstream())
    """,
    "mapped_task_group": """
        @task_group
        def per_order(order_id):
            PacklyOrderStatusSensor(task_id="wait", order_id=order_id, deferrable=True)
            PacklyOrdersOperator(task_id="orders", statuses=order_id)

        per_order.expand(order_id=upstream())
    """,
}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """One DagBag over a folder holding one DAG file per case (parsed once for the module)."""
    from airflow.dag_processing.dagbag import DagBag

    folder: Path = tmp_path_factory.mktemp("dags")
    for index, (cls, name) in enumerate(PAIRS):
        body = call(cls, VALID[cls], **{name: "upstream()"})
        (folder / f"pair_{index}.py").write_text(dag_source(f"pair_{index}", body))
    for name, body in SPECIAL_DAGS.items():
        (folder / f"{name}.py").write_text(dag_source(name, body))
    for index, (cls, name, value, _) in enumerate(LITERAL_BAD):
        body = call(cls, {**VALID[cls], name: value})
        (folder / f"bad_{index}.py").write_text(dag_source(f"bad_{index}", body))
    kwargs: dict[str, Any] = {"dag_folder": str(folder)}
    if "include_examples" in inspect.signature(DagBag).parameters:  # Airflow 3.2
        kwargs["include_examples"] = False
    bag = DagBag(**kwargs)
    bag.folder = folder  # type: ignore[attr-defined]
    return bag


def import_error(bag, file_name: str) -> str | None:
    for path, error in bag.import_errors.items():
        if Path(path).name == file_name:
            return error
    return None


@pytest.mark.parametrize(("cls", "name"), PAIRS, ids=[pair_id(p) for p in PAIRS])
def test_an_upstream_output_for_any_argument_imports(dagbag, cls, name):
    index = PAIRS.index((cls, name))
    assert import_error(dagbag, f"pair_{index}.py") is None
    task_ = dagbag.dags[f"pair_{index}"].get_task("under_test")
    assert task_.upstream_task_ids == {"upstream"}  # the XComArg made the dependency


@pytest.mark.parametrize("name", list(SPECIAL_DAGS))
def test_nested_outputs_operator_outputs_and_mapped_tasks_import(dagbag, name):
    assert import_error(dagbag, f"{name}.py") is None
    assert name in dagbag.dags


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_every_checked_argument_is_a_template_field(cls):
    """Airflow resolves an XComArg only in a template field: a checked argument must be one."""
    checked = {name for rule in cls.argument_checks for name in rule.names}
    assert checked <= set(cls.template_fields), checked - set(cls.template_fields)
    accepted = set(inspect.signature(cls.__init__).parameters)
    assert set(cls.template_fields) <= accepted  # each is an argument of the same name


# -- wrong values: a DAG import error when literal, a task failure when they come from upstream --------

#: (class, argument, wrong value, the message) for every checked argument.
LITERAL_BAD: list[tuple[type, str, Any, str]] = [
    (PacklyOperator, "endpoint", "", "endpoint must be a path such as '/v1/reseller/orders'"),
    (PacklyOperator, "method", "FETCH", "method must be one of GET"),
    (PacklyDielineOperator, "article", "no spaces allowed", "article must be a Packly code"),
    (PacklyDielineOperator, "material", "", "material must be a Packly code"),
    (PacklyDielineOperator, "width", -5, "width must be a positive number of millimetres"),
    (PacklyDielineOperator, "depth", 0, "depth must be a positive number of millimetres"),
    (PacklyDielineOperator, "height", 1.234, "height may have at most two decimals"),
    (PacklyDielineOperator, "output_path", " ", "output_path must not be empty"),
    (PacklyQuotationOperator, "items", [], "A quotation needs at least one item"),
    (PacklyQuotationOperator, "items", [{**ITEM, "width": -1}], r"items\[0\]\.width must be a positive number"),
    (
        PacklyQuotationOperator,
        "items",
        [{**BOX, "quantity": 0}],
        r"items\[0\]\.references\[0\]\.quantity must be a positive whole number",
    ),
    (PacklyQuotationOperator, "items", {"article": "s020_v1"}, "items must be a list of quotation items"),
    (PacklyQuotationOperator, "shipping", "Italy", "shipping must be an ISO 3166 two-letter country code"),
    (PacklyOrdersOperator, "statuses", ["closed", "shipped"], r"statuses has unknown status\(es\) 'shipped'"),
    (PacklyOrdersOperator, "since", "last tuesday", "since must be an ISO-8601 timestamp"),
    (PacklyOrdersOperator, "until", "tomorrow", "until must be an ISO-8601 timestamp"),
    (PacklyOrdersOperator, "timestamp_field", "", "A time filter .* needs timestamp_field"),
    (PacklyOrdersOperator, "use_data_interval", "maybe", "use_data_interval must be true or false"),
    (PacklyOrdersOperator, "max_orders", 0, "max_orders must be a positive whole number"),
    (PacklyOrdersOperator, "sort", "newest", "sort must be 'asc' or 'desc'"),
    (PacklyOrdersOperator, "page_size", 0, "limit must be a positive whole number"),
    (PacklyOrderStatusSensor, "order_id", "", "order_id must be a non-empty string"),
    (PacklyOrderStatusSensor, "target_statuses", ["shipped"], r"target_statuses has unknown status\(es\) 'shipped'"),
    (
        PacklyOrderStatusSensor,
        "failure_statuses",
        ["cancelled"],
        r"failure_statuses has unknown status\(es\) 'cancelled'",
    ),
    (PacklyOrderStatusSensor, "page_size", 0, "page_size must be a positive whole number"),
    (PacklyOrderProductsShippedSensor, "order_id", "  ", "order_id must be a non-empty string"),
    (
        PacklyOrderProductsShippedSensor,
        "target_statuses",
        ["closed"],
        r"target_statuses has unknown status\(es\) 'closed'",
    ),
    (PacklySensor, "endpoint", "", "endpoint must be a path such as '/v1/reseller/orders'"),
]
#: The time-filter rule needs a time filter to apply to.
VALID_WITH = {(PacklyOrdersOperator, "timestamp_field"): {"since": "2026-01-01"}}


def bad_id(case: tuple[type, str, Any, str]) -> str:
    return f"{case[0].__name__}-{case[1]}-{case[2]!r}"


@pytest.mark.parametrize(("cls", "name", "value", "message"), LITERAL_BAD, ids=[bad_id(c) for c in LITERAL_BAD])
def test_a_wrong_literal_is_still_a_dag_import_error(cls, name, value, message, dagbag):
    index = LITERAL_BAD.index((cls, name, value, message))
    if (cls, name) in VALID_WITH:  # written without the extra argument in the DAG file: check directly
        with pytest.raises(PacklyValidationError, match=message):
            cls(task_id="t", **{**VALID[cls], **VALID_WITH[(cls, name)], name: value})
        return
    error = import_error(dagbag, f"bad_{index}.py")
    assert error is not None, f"{cls.__name__}({name}={value!r}) imported without error"
    assert "PacklyValidationError" in error
    import re

    assert re.search(message, error), error


class FakeTaskInstance:
    """Enough of a task instance for Airflow to resolve an XComArg: upstream return values by task id."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return self.values[task_ids]


@pytest.fixture
def no_packly(mocker):
    """A wrong value must fail before any request: reaching for a hook fails the test."""

    def refuse(self):
        raise AssertionError("a wrong argument reached Packly")

    mocker.patch.object(_PacklyBaseOperator, "get_hook", refuse)
    mocker.patch.object(_PacklySensorBase, "get_hook", refuse)


@pytest.mark.parametrize(("cls", "name", "value", "message"), LITERAL_BAD, ids=[bad_id(c) for c in LITERAL_BAD])
def test_the_same_wrong_value_from_upstream_fails_at_execute_with_the_same_message(
    cls, name, value, message, no_packly
):
    with DAG("upstream_values", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

        @task
        def upstream() -> Any:
            return value

        operator = cls(task_id="under_test", **{**VALID[cls], **VALID_WITH.get((cls, name), {}), name: upstream()})
    context: dict[str, Any] = {"ti": FakeTaskInstance({"upstream": value}), "params": {}, "ds": "2026-03-01"}
    operator.render_template_fields(context)
    assert getattr(operator, name) == value  # resolved by Airflow
    with pytest.raises(PacklyValidationError, match=message):
        operator.execute(context)


def test_a_wrong_nested_quantity_from_upstream_fails_at_execute(no_packly):
    with DAG("nested", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

        @task
        def quantity() -> int:
            return 0

        operator = PacklyQuotationOperator(task_id="q", items=[{**BOX, "quantity": quantity()}])
    context: dict[str, Any] = {"ti": FakeTaskInstance({"quantity": 0}), "params": {}}
    operator.render_template_fields(context)
    with pytest.raises(
        PacklyValidationError, match=r"items\[0\]\.references\[0\]\.quantity must be a positive whole number"
    ):
        operator.execute(context)


def test_a_template_is_checked_once_rendered_with_the_same_message(no_packly):
    sensor = PacklyOrderStatusSensor(task_id="s", order_id="ORD-1", target_statuses="{{ params.wanted }}")
    sensor.render_template_fields({"params": {"wanted": ["shipped"]}})
    with pytest.raises(PacklyValidationError, match=r"target_statuses has unknown status\(es\) 'shipped'"):
        sensor.execute({"params": {}})


def test_the_docs_list_each_class_s_template_fields():
    """docs/operators.md names the templated arguments; they are the classes' template_fields."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()
    listed = [tuple(re.split(r",\s*", found)) for found in re.findall(r"[Tt]emplated:\s*`([a-z_, ]+)`", text)]
    assert listed == [
        PacklyOperator.template_fields,
        PacklyOrdersOperator.template_fields,
        PacklyOrderStatusSensor.template_fields,
    ]
    assert PacklyOrderProductsShippedSensor.template_fields == PacklyOrderStatusSensor.template_fields
    assert PacklyQuotationOperator.template_fields == ("items", "shipping")
