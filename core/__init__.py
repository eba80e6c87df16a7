"""The d3m-dashboard engine: data, models, training, TRAK, D3M, methods, jobs and runs.

Nothing here imports Streamlit or the dashboard package.
"""
