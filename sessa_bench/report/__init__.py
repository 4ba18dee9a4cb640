"""Reports: tables, captions and plots built from run folders only (summary.json and metrics.jsonl).

Nothing here imports a task, a model, the trainer or the run launcher: what a report needs to know about a
task (training length, chance, out-of-distribution slices, ceiling) is in each run's summary.json
(`task_facts`), written by the run itself.

- markdown.py   the one Markdown/CSV table writer, mean ± std and the provenance caption
- collect.py    reading finished run folders
- paper.py      the paper's tables (specs with the paper's numbers, rendering)
- plots.py      validation curves and per-lag accuracy
- demo.py       the demo table; calibration.py the Diffuse MQAR calibration table
"""
