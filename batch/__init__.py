"""Batch runs: one workflow over the rows of a table (`python main.py batch WORKFLOW TABLE`).

One job = one whole workflow run with a row's values. The driver (driver.py) validates every row
first, skips rows the output folder's manifest says are finished, and writes every file and
manifest line itself; workers (worker.py: one executor each) return bytes. The local backend runs
one worker in this process; the Ray backend (ray_backend.py, imported only for --ray) runs one per
Ray actor. Cheap to import: neither torch nor ray is imported here.
"""
