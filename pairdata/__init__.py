"""Training data for judges: public preference datasets turned into labelled-pair JSONL (`rm/pairs.py`), and pair
files cleaned of benchmark items (`deltarubric.pairdata.dedup`). `deltarubric data ...` is the command-line face of
both."""
