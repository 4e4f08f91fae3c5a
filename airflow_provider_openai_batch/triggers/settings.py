"""The status board's settings, read from the ``[openai_batch]`` section of the Airflow configuration.

Read once per board (when the first trigger of a connection registers in an event loop), so a deployment
tunes them like any Airflow option (``airflow.cfg`` or ``AIRFLOW__OPENAI_BATCH__<NAME>``) and a test or
benchmark sets them the same way. The defaults here are the ones declared in ``get_provider_info``.
"""

from __future__ import annotations

from dataclasses import dataclass

SECTION = "openai_batch"

#: Defaults, in the order and with the meaning declared in the provider info's ``config`` section.
DEFAULT_COALESCE = True
DEFAULT_LIST_PAGE_SIZE = 100
DEFAULT_MAX_LIST_PAGES = 100
DEFAULT_SUMMARY_LOG_INTERVAL = 300.0
DEFAULT_PROGRESS_LOG_INTERVAL = 300.0


@dataclass(frozen=True)
class BoardSettings:
    """How one status board polls.

    :param coalesce: poll through ``GET /batches`` pages shared by every trigger; off, each batch is
        retrieved on its own every poll interval (still one board, one schedule, pushed completions).
    :param list_page_size: ``limit`` of a list page (1 to 100).
    :param max_list_pages: how deep, in pages, the board reads and remembers the list; older batches are
        retrieved one by one.
    :param summary_log_interval: seconds between the board's one-line summaries in the triggerer log.
    :param progress_log_interval: a trigger is woken for request counts that changed (not the status) at
        most this often, so its task log shows progress without a line per poll.
    """

    coalesce: bool = DEFAULT_COALESCE
    list_page_size: int = DEFAULT_LIST_PAGE_SIZE
    max_list_pages: int = DEFAULT_MAX_LIST_PAGES
    summary_log_interval: float = DEFAULT_SUMMARY_LOG_INTERVAL
    progress_log_interval: float = DEFAULT_PROGRESS_LOG_INTERVAL

    def __post_init__(self) -> None:
        if not 1 <= self.list_page_size <= 100:
            raise ValueError(
                f"Expected [{SECTION}] list_page_size between 1 and 100 but received {self.list_page_size!r}"
            )
        if self.max_list_pages < 1:
            raise ValueError(f"Expected [{SECTION}] max_list_pages >= 1 but received {self.max_list_pages!r}")
        for name in ("summary_log_interval", "progress_log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"Expected [{SECTION}] {name} > 0 seconds but received {getattr(self, name)!r}"
                )

    @classmethod
    def from_conf(cls) -> BoardSettings:
        """The settings as the Airflow configuration has them now (defaults for anything unset)."""
        from airflow_provider_openai_batch.version_compat import conf

        return cls(
            coalesce=conf.getboolean(SECTION, "coalesce", fallback=DEFAULT_COALESCE),
            list_page_size=conf.getint(SECTION, "list_page_size", fallback=DEFAULT_LIST_PAGE_SIZE),
            max_list_pages=conf.getint(SECTION, "max_list_pages", fallback=DEFAULT_MAX_LIST_PAGES),
            summary_log_interval=conf.getfloat(
                SECTION, "summary_log_interval", fallback=DEFAULT_SUMMARY_LOG_INTERVAL
            ),
            progress_log_interval=conf.getfloat(
                SECTION, "progress_log_interval", fallback=DEFAULT_PROGRESS_LOG_INTERVAL
            ),
        )
