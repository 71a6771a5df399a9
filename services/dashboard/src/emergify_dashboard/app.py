"""The script ``streamlit run`` executes (``python -m emergify_dashboard`` starts it)."""

from emergify_dashboard.page import main

main()
