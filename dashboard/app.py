"""The mlafleet dashboard: Streamlit entrypoint (``mlafleet dashboard`` runs this file).

Reads the mlafleet API over HTTP only (``MLAFLEET_API_URL``); see docs/DASHBOARD.md.
Page config, the shared sidebar, then ``st.navigation`` runs the chosen page.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mlafleet.dashboard import ui

_PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="mlafleet", page_icon="⚡", layout="wide")

navigation = st.navigation(
    [
        st.Page(_PAGES / "recommendations.py", title="Recommendations", icon="🏆", default=True),
        st.Page(_PAGES / "fleet.py", title="Fleet", icon="🖥️"),
        st.Page(_PAGES / "explore.py", title="Explore", icon="🔎"),
        st.Page(_PAGES / "compare.py", title="Compare", icon="⚖️"),
        st.Page(_PAGES / "jobs.py", title="Jobs", icon="🛠️"),
    ]
)
ui.sidebar()
navigation.run()
