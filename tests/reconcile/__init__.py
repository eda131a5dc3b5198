"""Reconciliation against the mock's admin usage reports."""
