"""``@task.openai_batch``: the decorated function returns (or yields) the requests; the operator does the rest."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from airflow_provider_openai_batch.version_compat import determine_kwargs

if TYPE_CHECKING:
    from airflow.sdk import Context


class _OpenAIBatchDecoratedOperator(DecoratedOperator, OpenAIBatchOperator):
    """Calls the decorated function at run time and streams what it returns or yields as the batch's requests."""

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *OpenAIBatchOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **OpenAIBatchOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.openai_batch"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            requests=SET_DURING_EXECUTION,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.requests = lambda: self.python_callable(*self.op_args, **kwargs)
        return OpenAIBatchOperator.execute(self, context)


def openai_batch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function returning or yielding request dicts (or bare bodies with ``custom_id_prefix``) into an
    OpenAIBatchOperator. Takes the operator's arguments, e.g. ``@task.openai_batch(output_path=...)``."""
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_OpenAIBatchDecoratedOperator,
        **kwargs,
    )
