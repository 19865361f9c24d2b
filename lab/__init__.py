"""The followme lab: real Asterisk 22 PBX hosts in network namespaces on this machine.

Run `python -m lab up|down|status [--hosts N]`; see lab/README.md.
"""
