"""Small rendering helpers shared by the pages: API failures, empty states, the sidebar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from . import data

T = TypeVar("T")

# Material icons ship with Streamlit's frontend (emoji need a font the browser may lack).
ICON_DOWN = ":material/cloud_off:"
ICON_WARN = ":material/warning:"
ICON_INFO = ":material/info:"
ICON_OK = ":material/check_circle:"
ICON_CUT = ":material/content_cut:"
ICON_CANCEL = ":material/cancel:"

START_A_JOB = (
    "Start a tuning job: `mlafleet demo` (one machine, everything in one command), or "
    "`mlafleet submit job.yaml` against this API, or the **Jobs** page here."
)


def fetch(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a ``data`` function; on an API failure show why and stop the page (no traceback).

    Raises:
        streamlit's StopException (through ``st.stop()``) after showing the message.
    """
    try:
        return fn(*args, **kwargs)
    except data.ApiUnreachableError as exc:
        st.error(str(exc), icon=ICON_DOWN)
    except data.ApiError as exc:
        st.error(
            f"The API refused the request ({exc.status_code}): {exc.message}",
            icon=ICON_WARN,
        )
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def empty_state(what: str) -> None:
    """Say that ``what`` is empty and how to fill it."""
    st.info(f"No {what} yet. {START_A_JOB}", icon=ICON_INFO)


def sidebar() -> str:
    """The shared sidebar: API URL, its health, a refresh button. Returns the API URL."""
    url = data.api_url()
    with st.sidebar:
        st.caption("mlafleet API")
        st.code(url, language=None)
        try:
            status = data.health(url)
            st.success(f"API up ({status.get('status', 'ok')})", icon=ICON_OK)
        except data.ApiUnreachableError:
            st.error("API unreachable: start it with `mlafleet serve`", icon=ICON_DOWN)
        except data.ApiError as exc:
            st.warning(f"API unhealthy ({exc.status_code}): {exc.message}", icon=ICON_WARN)
        if st.button("Refresh data", help="drop cached answers and ask the API again"):
            st.cache_data.clear()
    return url
