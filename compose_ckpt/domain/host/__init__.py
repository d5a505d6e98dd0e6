"""This machine: its boot and shutdown hook, its setup, and whether checkpoints can work on it.

`reboot.py` stops stacks at their checkpoint before Docker stops and brings them back at boot;
`hostsetup.py` installs and removes that hook (`compose-ckpt host install/uninstall`); `doctor.py`
says whether checkpoint/restore can work on this engine and why not; `compat.py` (with `versions.py`)
says whether a snapshot taken on one engine can be restored on another. Built on the stack and the
store; the transport wing above uses it.
"""
