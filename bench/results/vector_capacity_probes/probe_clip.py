import sys, runpy
clip = float(sys.argv.pop(1))
from llmzip.kinds import memory_int
memory_int.IntVectorForm.clip = clip
runpy.run_path("/tmp/probe_lr.py", run_name="__main__")
