"""Recording a program's mapping calls and page faults, and replaying them through the model."""
