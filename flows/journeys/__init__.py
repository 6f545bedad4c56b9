"""Prefect-free journey logic: candidates in SQL, decisions in Python, bulk writes."""
