"""The dashboard: `streamlit run app.py` (D3M_DATA / D3M_WORKDIR set the sidebar's defaults)."""
import streamlit as st

from dashboard import context

st.set_page_config(page_title="D3M dashboard", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("dashboard/pages/data_model.py", title="Data and model", icon=":material/bar_chart:", default=True),
    st.Page("dashboard/pages/extremes.py", title="Extremes per class", icon=":material/swap_horiz:"),
    st.Page("dashboard/pages/alignment.py", title="Alignment", icon=":material/target:"),
    st.Page("dashboard/pages/subpopulations.py", title="Subpopulations", icon=":material/grid_view:"),
    st.Page("dashboard/pages/debias.py", title="Debias", icon=":material/build:"),
    st.Page("dashboard/pages/compare.py", title="Compare runs", icon=":material/compare:"),
    st.Page("dashboard/pages/ablations.py", title="Ablations", icon=":material/science:"),
]

navigation = st.navigation(PAGES)
context.sidebar()
navigation.run()
