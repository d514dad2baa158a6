"""The controller: the single writer of deployment state. :mod:`.machine` is the pure state
machine, :mod:`.process` the ``coalmine controller`` process around it."""
