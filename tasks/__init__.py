"""Tasks: one file per task, all with the interface of base.Task."""
