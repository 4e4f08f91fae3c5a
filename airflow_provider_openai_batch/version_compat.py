"""What differs between the Airflow minors the provider supports (3.1 to 3.3), imported from one place.

Each name is taken from the Task SDK where the running Airflow has it there, else from where Airflow 3.1 keeps it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk.bases.decorator import determine_kwargs
    from airflow.sdk.configuration import conf
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException
    from airflow.sdk.log import amask_secret, mask_secret
    from airflow.sdk.observability.stats import Stats
else:
    try:  # Airflow 3.2+
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf

    from airflow.sdk.exceptions import AirflowException

    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:
        from airflow.exceptions import AirflowFailException

    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowNotFoundException

    from airflow.sdk.log import mask_secret

    try:  # Airflow 3.3+
        from airflow.sdk.log import amask_secret
    except ImportError:

        async def amask_secret(secret: Any, name: str | None = None) -> None:
            """Before 3.3 there is only the sync call, which Airflow's own ``extra_dejson`` makes in a loop."""
            mask_secret(secret, name)

    try:
        from airflow.sdk.bases.decorator import determine_kwargs
    except ImportError:
        from airflow.utils.operator_helpers import determine_kwargs

    try:  # Airflow 3.2+: the Task SDK's Stats, initialised by the task runner and the triggerer
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1
        from airflow.stats import Stats

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "amask_secret",
    "conf",
    "determine_kwargs",
    "mask_secret",
    "Stats",
]
