"""Human approval of tool calls, the people's side: ``coalmine approvals list | approve |
deny`` (the agent's side is :mod:`streams.sdk.approvals`)."""
