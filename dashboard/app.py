"""The mlafleet dashboard: Streamlit entrypoint (``mlafleet dashboard`` runs this file).

Reads the mlafleet API over HTTP only (``MLAFLEET_API_URL``); see docs/DASHBOARD.md.
Page config, the shared sidebar, then ``st.navigation`` runs the chosen page.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mlafleet.dashboard import ui

_PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="mlafleet", page_icon=":material/bolt:", layout="wide")

navigation = st.navigation(
    [
        st.Page(
            _PAGES / "recommendations.py",
            title="Recommendations",
            icon=":material/emoji_events:",
            default=True,
        ),
        st.Page(_PAGES / "fleet.py", title="Fleet", icon=":material/dns:"),
        st.Page(_PAGES / "explore.py", title="Explore", icon=":material/grid_on:"),
        st.Page(_PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page(_PAGES / "jobs.py", title="Jobs", icon=":material/build:"),
    ]
)
ui.sidebar()
navigation.run()
