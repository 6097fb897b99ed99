"""Deploying a version on the device: journal, store, download, the state machine and the reconciler."""
