"""``coalmine bench detector``: canary judges on simulated deployments, side by side.

Modules: :mod:`.scenarios` (frozen scenario definitions and the grid), :mod:`.simulate`
(vectorised window aggregates), :mod:`.baselines` (Kayenta- and Flagger-style judges),
:mod:`.runner` (replications, common random numbers, worker processes), :mod:`.summary`
(pure statistics of the outcomes), :mod:`.report` and :mod:`.plot` (table, JSON, PNG),
:mod:`.cli` (the command).
"""
