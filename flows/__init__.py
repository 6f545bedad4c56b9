"""Care journeys and the flows that run them.

``flows.journeys`` holds the Prefect-free decision logic (also used by
``vipcare rules preview``); ``flows.daily`` wraps it in Prefect tasks. Importing
this package must stay cheap: it never imports Prefect.
"""
